-- Message ids without AUTOINCREMENT: every insert no longer reads and rewrites the
-- sqlite_sequence row (one page fewer written per commit, issue 14). Messages are never
-- deleted, so a new id is always above every id given before (SQLite takes the largest
-- rowid plus one), as it was: increasing and unique.
CREATE TABLE messages_rowid (
    id INTEGER PRIMARY KEY,
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
INSERT INTO messages_rowid (id, conversation_id, seq, sender_id, content, attachment_id, client_msg_id, created_at)
    SELECT id, conversation_id, seq, sender_id, content, attachment_id, client_msg_id, created_at
    FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_rowid RENAME TO messages;
DELETE FROM sqlite_sequence WHERE name = 'messages';
