ALTER TABLE presence_log DROP COLUMN coalesced;
