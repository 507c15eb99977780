-- Which lease wrote each order and fill (cluster mode; NULL on a single node). The fence already refuses a
-- write whose token was overtaken; the column lets an operator (and the tests) check that no row was written
-- under a token after the lease moved on.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS lease_token BIGINT;
ALTER TABLE fills ADD COLUMN IF NOT EXISTS lease_token BIGINT;
