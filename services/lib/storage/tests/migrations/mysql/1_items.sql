-- Test schema for mall-storage's own tests (MySQL/MariaDB dialect).
CREATE TABLE items (
    id BIGINT NOT NULL PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    stock BIGINT NOT NULL,
    UNIQUE KEY items_name (name)
) ENGINE = InnoDB;

CREATE TABLE meta (
    k VARCHAR(32) NOT NULL PRIMARY KEY,
    v VARCHAR(64) NOT NULL
) ENGINE = InnoDB;

INSERT INTO meta (k, v) VALUES ('backend', 'mysql');
