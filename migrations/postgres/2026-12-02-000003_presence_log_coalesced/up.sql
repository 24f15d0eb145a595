-- During a database outage presence keeps only each user's latest transition; the row
-- written after it says how many transitions it stands for (1: an ordinary transition).
ALTER TABLE presence_log ADD COLUMN coalesced INTEGER NOT NULL DEFAULT 1;
