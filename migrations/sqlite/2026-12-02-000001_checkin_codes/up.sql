-- A member's short check-in code: typed at the desk or scanned from the QR code on their
-- phone. One per member, unique across the gym.
CREATE TABLE checkin_codes (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
