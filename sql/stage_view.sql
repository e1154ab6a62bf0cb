-- One view per materialized stage, named after its asset.
CREATE OR REPLACE VIEW {stage} AS SELECT * FROM read_parquet('{path}');
