//! Unit tests for the URL helpers.

use super::*;

fn svc(base: &str, service: &str) -> String {
    service_database_url(base, service).unwrap_or_else(|e| panic!("{base}: {e}"))
}

#[test]
fn mysql_database_gets_service_suffix() {
    assert_eq!(svc("mysql://u:p@h:3306/mall?x=y", "auth"), "mysql://u:p@h:3306/mall_auth?x=y");
    assert_eq!(svc("mysql://h/mall", "user"), "mysql://h/mall_user");
    assert_eq!(svc("mysql://h/mall/", "user"), "mysql://h/mall_user");
    assert_eq!(svc("mariadb://u@h:3306/shop#frag", "auth"), "mariadb://u@h:3306/shop_auth#frag");
}

#[test]
fn mysql_without_database_uses_mall_prefix() {
    assert_eq!(svc("mysql://u:p@h:3306", "auth"), "mysql://u:p@h:3306/mall_auth");
    assert_eq!(svc("mysql://u:p@h:3306/", "auth"), "mysql://u:p@h:3306/mall_auth");
    assert_eq!(
        svc("mysql://u:p@h:3306?ssl-mode=disabled", "auth"),
        "mysql://u:p@h:3306/mall_auth?ssl-mode=disabled"
    );
}

#[test]
fn mysql_password_with_slash_is_not_taken_for_a_path() {
    // An encoded slash stays in the userinfo.
    assert_eq!(svc("mysql://u:a%2Fb@h/mall", "auth"), "mysql://u:a%2Fb@h/mall_auth");
}

#[test]
fn sqlite_file_stem_gets_service_suffix() {
    assert_eq!(svc("sqlite:///data/mall.db", "auth"), "sqlite:///data/mall_auth.db");
    assert_eq!(svc("sqlite:/data/mall.db", "auth"), "sqlite:/data/mall_auth.db");
    assert_eq!(svc("sqlite://data/mall.db", "auth"), "sqlite://data/mall_auth.db");
    assert_eq!(svc("sqlite:///data/mall.db?mode=rwc", "auth"), "sqlite:///data/mall_auth.db?mode=rwc");
    assert_eq!(svc("sqlite:mall.db", "auth"), "sqlite:mall_auth.db");
    assert_eq!(svc("sqlite:/data/mall", "auth"), "sqlite:/data/mall_auth");
    assert_eq!(svc("sqlite:///data.d/mall.v1.db", "auth"), "sqlite:///data.d/mall.v1_auth.db");
}

#[test]
fn sqlite_memory_is_unchanged() {
    assert_eq!(svc("sqlite::memory:", "auth"), "sqlite::memory:");
    assert_eq!(svc("sqlite://?mode=memory", "auth"), "sqlite://?mode=memory");
}

#[test]
fn sqlite_without_file_is_rejected() {
    assert!(matches!(service_database_url("sqlite:///data/", "auth"), Err(StorageError::InvalidUrl { .. })));
}

#[test]
fn bad_service_names_are_rejected() {
    for bad in ["", "a-b", "a b", "a/b", "ä", "x".repeat(33).as_str(), "a`b"] {
        assert!(
            matches!(service_database_url("mysql://h/mall", bad), Err(StorageError::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn database_url_with_name_replaces_the_whole_name() {
    assert_eq!(
        database_url_with_name("mysql://root@127.0.0.1:3306/mall_test", "mall_t_0123456789ab").unwrap(),
        "mysql://root@127.0.0.1:3306/mall_t_0123456789ab"
    );
    assert_eq!(
        database_url_with_name("sqlite:///d/mall.db?mode=rwc", "other").unwrap(),
        "sqlite:///d/other.db?mode=rwc"
    );
}

#[test]
fn unsupported_urls_are_rejected_without_password() {
    for url in ["postgres://u:pw@h/db", "redis://:pw@h", "http://u:pw@h/x", "nothing", "", "mysql:/h/db"] {
        let err = Backend::from_url(url).expect_err(url);
        assert!(matches!(err, StorageError::UnsupportedUrl { .. }), "{err}");
        let err = service_database_url(url, "auth").expect_err(url);
        assert!(matches!(err, StorageError::UnsupportedUrl { .. }), "{err}");
        let text = err.to_string();
        assert!(!text.contains(":pw@"), "{text}");
        assert!(text.contains("mysql://") && text.contains("sqlite:"), "{text}");
    }
    let text = Backend::from_url("postgres://u:pw@h/db").unwrap_err().to_string();
    assert!(text.contains("postgres://u:***@h/db"), "{text}");
}

#[test]
fn backend_from_url() {
    assert_eq!(Backend::from_url("mysql://h/db").unwrap(), Backend::MySql);
    assert_eq!(Backend::from_url("mariadb://h/db").unwrap(), Backend::MySql);
    assert_eq!(Backend::from_url("sqlite:x.db").unwrap(), Backend::Sqlite);
    assert_eq!(Backend::from_url("sqlite:///x.db").unwrap(), Backend::Sqlite);
    assert_eq!(Backend::from_url("sqlite::memory:").unwrap(), Backend::Sqlite);
    assert!(Backend::from_url("mysqlx://h/db").is_err());
    assert!(Backend::from_url("sqlitex:x.db").is_err());
}

#[test]
fn redaction() {
    assert_eq!(redact_url("mysql://u:pw@h:1/db?a=b"), "mysql://u:***@h:1/db?a=b");
    assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
    assert_eq!(redact_url("mysql://u:p@w@h/db"), "mysql://u:***@h/db");
    assert_eq!(redact_url("mysql://u@h/db"), "mysql://u@h/db");
    assert_eq!(redact_url("mysql://h/db?user=a:b@c"), "mysql://h/db?user=a:b@c");
    assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
}

#[test]
fn sqlite_url_in_dir() {
    assert_eq!(sqlite_url_in(Path::new("/var/lib/mall"), "auth"), "sqlite:///var/lib/mall/auth.db?mode=rwc");
    assert_eq!(sqlite_url_in(Path::new("data"), "auth"), "sqlite:data/auth.db?mode=rwc");
    let odd = sqlite_url_in(Path::new("/tmp/a b#c?d%e"), "auth");
    assert_eq!(odd, "sqlite:///tmp/a%20b%23c%3Fd%25e/auth.db?mode=rwc");
    assert_eq!(sqlite_file_path(&odd).unwrap(), Some(PathBuf::from("/tmp/a b#c?d%e/auth.db")));
}

#[test]
fn sqlite_paths_and_create_mode() {
    assert_eq!(sqlite_file_path("sqlite://data/x.db?mode=rwc").unwrap(), Some(PathBuf::from("data/x.db")));
    assert_eq!(sqlite_file_path("sqlite:///data/x.db").unwrap(), Some(PathBuf::from("/data/x.db")));
    assert_eq!(sqlite_file_path("sqlite::memory:").unwrap(), None);
    assert_eq!(sqlite_with_create_mode("sqlite:/x.db").unwrap(), "sqlite:/x.db?mode=rwc");
    assert_eq!(
        sqlite_with_create_mode("sqlite:/x.db?cache=private").unwrap(),
        "sqlite:/x.db?cache=private&mode=rwc"
    );
    assert_eq!(sqlite_with_create_mode("sqlite:/x.db?mode=ro").unwrap(), "sqlite:/x.db?mode=ro");
}

#[test]
fn mysql_database_names() {
    assert_eq!(mysql_database_name("mysql://u:p@h/mall_auth?x=1").unwrap(), "mall_auth");
    for bad in ["mysql://u:p@h", "mysql://u:p@h/", "mysql://h/a%60b", "mysql://h/a;b"] {
        let err = mysql_database_name(bad).expect_err(bad);
        assert!(matches!(err, StorageError::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains(":p@"), "{err}");
    }
}
