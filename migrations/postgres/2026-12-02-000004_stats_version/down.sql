DROP TABLE stats_version;
