-- Spotter schema, PostgreSQL flavour. Keep in step with ../../sqlite and src/db/schema.rs.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin','trainer','member','staff','device')),
    account_status TEXT NOT NULL DEFAULT 'active'
        CHECK (account_status IN ('active','inactive','suspended','banned')),
    is_online BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE refresh_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    access_jti TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    revoked_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

CREATE TABLE presence_log (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at TIMESTAMP NOT NULL,
    is_online BOOLEAN NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX presence_log_user ON presence_log(user_id, id);

CREATE TABLE trainer_clients (
    trainer_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (trainer_id, member_id)
);

CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    user_low BIGINT NOT NULL REFERENCES users(id),
    user_high BIGINT NOT NULL REFERENCES users(id),
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    last_message_at TIMESTAMP,
    UNIQUE (user_low, user_high)
);

CREATE TABLE conversation_members (
    conversation_id BIGINT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX conversation_members_user ON conversation_members(user_id);

CREATE TABLE files (
    id BIGINT PRIMARY KEY,
    owner_id BIGINT NOT NULL REFERENCES users(id),
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_id BIGINT NOT NULL REFERENCES users(id),
    content TEXT NOT NULL,
    attachment_id BIGINT REFERENCES files(id),
    client_msg_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_msg_id)
);

CREATE TABLE checkins (
    id BIGSERIAL PRIMARY KEY,
    member_id BIGINT NOT NULL REFERENCES users(id),
    location TEXT,
    notes TEXT,
    checked_in_at TIMESTAMP NOT NULL,
    checked_out_at TIMESTAMP,
    auto_closed BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT UNIQUE,
    created_by BIGINT NOT NULL REFERENCES users(id)
);
-- One open check-in per member, enforced by the database under concurrency.
CREATE UNIQUE INDEX checkins_one_open ON checkins(member_id) WHERE checked_out_at IS NULL;
CREATE INDEX checkins_day ON checkins(checked_in_at);

CREATE TABLE attendance (
    id BIGSERIAL PRIMARY KEY,
    employee_id BIGINT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('present','absent','left','on_leave')),
    date DATE NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    device TEXT,
    is_late BOOLEAN NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX attendance_day ON attendance(date, employee_id);
