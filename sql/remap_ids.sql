-- Contiguous ids from 0 for the users and items that survived k-core, ordered by the source
-- id (numerically where the ids are numbers, so a source whose ids already are 0..n-1
-- keeps them). Input table: {core} (codes u, i from dedupe.sql).
CREATE OR REPLACE TABLE user_ids AS
SELECT c.u, c.user_source,
       (row_number() OVER (ORDER BY try_cast(c.user_source AS BIGINT) NULLS LAST, c.user_source) - 1)::INTEGER AS user_id
FROM user_codes AS c SEMI JOIN (SELECT DISTINCT u FROM {core}) USING (u);

CREATE OR REPLACE TABLE item_ids AS
SELECT c.i, c.item_source,
       (row_number() OVER (ORDER BY try_cast(c.item_source AS BIGINT) NULLS LAST, c.item_source) - 1)::INTEGER AS item_id
FROM item_codes AS c SEMI JOIN (SELECT DISTINCT i FROM {core}) USING (i);

CREATE OR REPLACE TABLE remapped AS
SELECT uid.user_id, iid.item_id, uid.user_source, iid.item_source, k.rating, k."timestamp", k.x_label
FROM {core} AS k
JOIN user_ids AS uid USING (u)
JOIN item_ids AS iid USING (i)
ORDER BY uid.user_id, iid.item_id;
