DROP TABLE checkin_codes;
