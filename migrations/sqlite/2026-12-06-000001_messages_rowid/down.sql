CREATE TABLE messages_autoincrement (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_id INTEGER NOT NULL REFERENCES users(id),
    content TEXT NOT NULL,
    attachment_id INTEGER REFERENCES files(id),
    client_msg_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_msg_id)
);
INSERT INTO messages_autoincrement (id, conversation_id, seq, sender_id, content, attachment_id, client_msg_id, created_at)
    SELECT id, conversation_id, seq, sender_id, content, attachment_id, client_msg_id, created_at
    FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_autoincrement RENAME TO messages;
