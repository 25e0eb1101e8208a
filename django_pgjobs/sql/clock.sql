-- The database server's clock, for clocks.DatabaseClock: transaction-independent.
SELECT clock_timestamp() AS now
