-- SQLite only (its messages table drops AUTOINCREMENT); PostgreSQL's BIGSERIAL ids stay as
-- they are. Kept so that both backends have the same migrations.
SELECT 1;
