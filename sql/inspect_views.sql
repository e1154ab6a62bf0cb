-- Inspection views over the stage views. Each statement says which stages it needs;
-- `neggen sql` creates those whose stages are materialized.

-- requires: interactions
CREATE OR REPLACE VIEW split_counts AS
SELECT split, count(*) AS interactions, count(DISTINCT user_id) AS users, count(DISTINCT item_id) AS items
FROM interactions GROUP BY split ORDER BY min(x_label);

-- requires: interactions, items
CREATE OR REPLACE VIEW item_popularity AS
SELECT i.item_id, i.original_id, i.title, count(*) FILTER (WHERE x.split = 'train') AS train_interactions,
       count(*) AS interactions
FROM items AS i JOIN interactions AS x USING (item_id)
GROUP BY ALL ORDER BY interactions DESC, i.item_id;

-- requires: users
CREATE OR REPLACE VIEW user_activity AS
SELECT n_train + n_valid + n_test AS interactions, count(*) AS users
FROM users GROUP BY ALL ORDER BY interactions;
