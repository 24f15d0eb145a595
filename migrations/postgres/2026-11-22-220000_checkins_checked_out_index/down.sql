DROP INDEX checkins_checked_out;
