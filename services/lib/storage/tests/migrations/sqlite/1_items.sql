-- Test schema for mall-storage's own tests (SQLite dialect).
CREATE TABLE items (
    id INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    stock INTEGER NOT NULL
);
CREATE UNIQUE INDEX items_name ON items (name);

CREATE TABLE meta (
    k TEXT NOT NULL PRIMARY KEY,
    v TEXT NOT NULL
);

INSERT INTO meta (k, v) VALUES ('backend', 'sqlite');
