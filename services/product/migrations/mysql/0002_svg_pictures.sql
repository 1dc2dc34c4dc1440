-- The demo catalog's pictures are SVG illustrations now (`/static/images/products/<slug>.svg`, as
-- src/demo.rs writes them): rows seeded with the earlier `.jpg` names point at the `.svg` instead.
-- Only the last four characters change (CHAR_LENGTH counts characters, not bytes). The column's binary
-- collation makes LIKE case-sensitive. updated_at is left alone: no one edited these products.

UPDATE products
SET picture = CONCAT(LEFT(picture, CHAR_LENGTH(picture) - 4), '.svg')
WHERE picture LIKE '/static/images/products/%.jpg';
