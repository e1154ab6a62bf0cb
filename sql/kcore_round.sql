-- One round of k-core filtering: drop the interactions of users with fewer than {k}
-- interactions and of items with fewer than {k}, both counted on the previous round.
-- Run to a fixpoint (no row removed) by the caller.
CREATE OR REPLACE TABLE {next} AS
WITH kept_users AS (
    SELECT u FROM {prev} GROUP BY u HAVING count(*) >= {k}
),
kept_items AS (
    SELECT i FROM {prev} GROUP BY i HAVING count(*) >= {k}
)
SELECT p.*
FROM {prev} AS p
SEMI JOIN kept_users USING (u)
SEMI JOIN kept_items USING (i);
