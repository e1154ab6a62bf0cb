-- Collapse duplicate (user, item) pairs: one row per pair, keeping the earliest split label,
-- the latest rating and the earliest timestamp. Input view: raw_interactions.
CREATE OR REPLACE TABLE kcore_0 AS
SELECT
    user_source,
    item_source,
    max(rating)    AS rating,
    min(timestamp) AS "timestamp",
    min(x_label)   AS x_label
FROM raw_interactions
GROUP BY user_source, item_source;
