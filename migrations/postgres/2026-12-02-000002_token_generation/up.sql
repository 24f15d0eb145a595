-- A password change, suspension or ban moves the generation: access tokens of an earlier one are refused.
ALTER TABLE users ADD COLUMN token_gen BIGINT NOT NULL DEFAULT 0;
