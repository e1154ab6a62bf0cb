-- Contiguous ids from 0, ordered by the source id (numerically where the ids are numbers,
-- so a source whose ids already are 0..n-1 keeps them). Input table: {core}.
CREATE OR REPLACE TABLE user_ids AS
SELECT user_source,
       (row_number() OVER (ORDER BY try_cast(user_source AS BIGINT) NULLS LAST, user_source) - 1)::INTEGER AS user_id
FROM (SELECT DISTINCT user_source FROM {core});

CREATE OR REPLACE TABLE item_ids AS
SELECT item_source,
       (row_number() OVER (ORDER BY try_cast(item_source AS BIGINT) NULLS LAST, item_source) - 1)::INTEGER AS item_id
FROM (SELECT DISTINCT item_source FROM {core});

CREATE OR REPLACE TABLE remapped AS
SELECT u.user_id, i.item_id, c.user_source, c.item_source, c.rating, c."timestamp", c.x_label
FROM {core} AS c
JOIN user_ids AS u USING (user_source)
JOIN item_ids AS i USING (item_source)
ORDER BY u.user_id, i.item_id;
