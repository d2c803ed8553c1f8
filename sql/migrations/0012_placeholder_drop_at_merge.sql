-- Placeholder so that 0013 loads on this branch (migrations are numbered gap-free): 0012 is
-- another branch's. Drop this file at merge.
SELECT 1;
