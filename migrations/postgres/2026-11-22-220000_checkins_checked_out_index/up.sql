-- The statistics' recomputation reads the visits that ended today (every sweep).
CREATE INDEX checkins_checked_out ON checkins(checked_out_at);
