-- Data-stage invariants; each query returns violating rows (none = the check passes).
-- Named blocks: `-- name: <check>`; the caller reads one block per asset check.

-- name: kcore_violations
SELECT 'user' AS kind, user_id AS id, count(*) AS degree FROM interactions GROUP BY user_id HAVING count(*) < {k}
UNION ALL
SELECT 'item', item_id, count(*) FROM interactions GROUP BY item_id HAVING count(*) < {k};

-- name: duplicate_pairs
SELECT user_id, item_id, count(*) AS copies FROM interactions GROUP BY ALL HAVING count(*) > 1;

-- name: users_without_train
SELECT user_id, count(*) AS interactions FROM interactions
GROUP BY user_id HAVING count(*) FILTER (WHERE split = 'train') = 0;

-- name: user_map_violations
SELECT 'not contiguous' AS problem, count(*) AS n FROM users HAVING max(user_id) + 1 <> count(*) OR min(user_id) <> 0
UNION ALL
SELECT 'duplicate source id', count(*) - count(DISTINCT user_source) FROM users HAVING count(*) <> count(DISTINCT user_source)
UNION ALL
SELECT 'duplicate user id', count(*) - count(DISTINCT user_id) FROM users HAVING count(*) <> count(DISTINCT user_id);

-- name: item_map_violations
SELECT 'not contiguous' AS problem, count(*) AS n FROM items HAVING max(item_id) + 1 <> count(*) OR min(item_id) <> 0
UNION ALL
SELECT 'duplicate source id', count(*) - count(DISTINCT item_source) FROM items HAVING count(*) <> count(DISTINCT item_source)
UNION ALL
SELECT 'duplicate item id', count(*) - count(DISTINCT item_id) FROM items HAVING count(*) <> count(DISTINCT item_id);
