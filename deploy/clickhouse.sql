-- The warehouse tables for edgeproxy's exposure and conversion logs
-- (CONTRACT §7), as the log-shipper sidecar in deploy/kubernetes.yaml fills
-- them: one row per JSON line, every replica's lines in one table.
--
--   clickhouse-client --multiquery < deploy/clickhouse.sql
--   edgeproxy report --sql clickhouse > report.sql       # the report's aggregation
--   clickhouse-client --database edgeproxy --queries-file report.sql
--
-- The query's rows are the counts `edgeproxy report` computes its statistics
-- from (per experiment, first arm and day: visitors, converters, value).
-- Ordered by (experiment, visitor, ts), each visitor's first exposure is
-- found next to their others; partitions by month keep old months cheap to drop.

CREATE DATABASE IF NOT EXISTS edgeproxy;

CREATE TABLE IF NOT EXISTS edgeproxy.exposures
(
    ts         DateTime64(3, 'UTC'),
    visitor    String,
    experiment LowCardinality(String),
    arm        LowCardinality(String),
    slot       LowCardinality(String),
    path       String,
    device     LowCardinality(String),
    country    LowCardinality(String),
    source     LowCardinality(String),
    replica    LowCardinality(String) DEFAULT ''   -- the pod that wrote the line
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (experiment, visitor, ts);

CREATE TABLE IF NOT EXISTS edgeproxy.conversions
(
    ts      DateTime64(3, 'UTC'),
    visitor String,
    path    String,
    value   Nullable(Float64),              -- null: a conversion without a value
    kind    LowCardinality(String)          -- "path" or "beacon"
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (visitor, ts);
