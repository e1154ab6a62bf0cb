-- Integer codes for the source ids (the k-core rounds then hash integers, not strings),
-- and duplicate (user, item) pairs collapsed to one row, keeping the earliest split label,
-- the highest rating and the earliest timestamp. Input view: raw_interactions.
CREATE OR REPLACE TABLE user_codes AS
SELECT user_source, (row_number() OVER ())::INTEGER AS u
FROM (SELECT DISTINCT user_source FROM raw_interactions);

CREATE OR REPLACE TABLE item_codes AS
SELECT item_source, (row_number() OVER ())::INTEGER AS i
FROM (SELECT DISTINCT item_source FROM raw_interactions);

CREATE OR REPLACE TABLE kcore_0 AS
SELECT
    uc.u,
    ic.i,
    max(r.rating)      AS rating,
    min(r."timestamp") AS "timestamp",
    min(r.x_label)     AS x_label
FROM raw_interactions AS r
JOIN user_codes AS uc USING (user_source)
JOIN item_codes AS ic USING (item_source)
GROUP BY uc.u, ic.i;
