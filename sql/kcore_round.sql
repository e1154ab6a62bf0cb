-- One round of k-core filtering: drop the interactions of users with fewer than {k}
-- interactions and of items with fewer than {k}, both counted on the previous round.
-- Run to a fixpoint (no row removed) by the caller.
CREATE OR REPLACE TABLE {next} AS
WITH user_degree AS (
    SELECT user_source FROM {prev} GROUP BY user_source HAVING count(*) >= {k}
),
item_degree AS (
    SELECT item_source FROM {prev} GROUP BY item_source HAVING count(*) >= {k}
)
SELECT p.*
FROM {prev} AS p
SEMI JOIN user_degree USING (user_source)
SEMI JOIN item_degree USING (item_source);
