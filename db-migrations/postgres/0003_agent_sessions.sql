-- Squashed into 0001_initial.sql (PostgreSQL support started at schema version 6).
SELECT 1;
