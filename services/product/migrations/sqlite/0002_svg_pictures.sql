-- The demo catalog's pictures are SVG illustrations now (`/static/images/products/<slug>.svg`, as
-- src/demo.rs writes them): rows seeded with the earlier `.jpg` names point at the `.svg` instead.
-- Only the last four characters change. GLOB, unlike SQLite's LIKE, is case-sensitive, so exactly the
-- rows that the MySQL twin's LIKE (binary collation) matches are rewritten. updated_at is left alone: no
-- one edited these products.

UPDATE products
SET picture = SUBSTR(picture, 1, LENGTH(picture) - 4) || '.svg'
WHERE picture GLOB '/static/images/products/*.jpg';
