//! `spawn_app()`: a whole mall per test, on SQLite and the in-process cache by default, or on MariaDB
//! and Redis (`spawn_app_on(Backend::Servers)`), with typed request helpers.

use std::time::Duration;

use mall::Mall;
use mall::config::Shared;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@mall.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "s3cret-passw0rd";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// SQLite files in a temp dir and the in-process cache: what `mall up` uses by default.
    Embedded,
    /// MariaDB and Redis from MALL_TEST_DATABASE_URL / MALL_TEST_REDIS_URL.
    Servers,
}

pub struct Options {
    pub backend: Backend,
    pub token_ttl: Duration,
    pub limits: mall_gateway::Limits,
    pub demo: bool,
    pub trusted_proxies: usize,
    /// How long the gateway keeps serving once told to stop (MALL_DRAIN_DELAY).
    pub drain: Duration,
    /// Auth's keys file (MALL_AUTH_KEYS_FILE).
    pub auth_keys_file: Option<std::path::PathBuf>,
    /// When the gateway fetches auth's public keys.
    pub keys: mall_gateway::KeyRefresh,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Embedded,
            token_ttl: Duration::from_secs(3600),
            // Tests register many accounts from one address: keep the limits out of their way.
            limits: mall_gateway::Limits::UNLIMITED,
            demo: false,
            trusted_proxies: 0,
            drain: Duration::ZERO,
            auth_keys_file: None,
            keys: mall_gateway::KeyRefresh::default(),
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub mall: Option<Mall>,
    drop_databases: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// One more gateway in front of a test's mall (its own process state: keys, verified tokens), sharing
/// the mall's services and cache, as a second replica would.
pub struct ExtraGateway {
    pub url: String,
    served: Option<mall_runtime::Served>,
}

impl ExtraGateway {
    pub async fn stop(mut self) {
        if let Some(served) = self.served.take() {
            served.stop().await.expect("the gateway stops cleanly");
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(-1)
    }
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Asserts an error envelope with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: i64) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.code(), code, "body: {}", self.body);
        assert!(self.body["msg"].as_str().is_some_and(|m| !m.is_empty()), "msg: {}", self.body);
        assert!(self.body["data"].is_null(), "data must be null on errors: {}", self.body);
    }
}

/// `None` when the real servers are not configured (and CI is not set): the caller skips.
pub async fn spawn_app_on(backend: Backend) -> Option<TestApp> {
    spawn_with(Options { backend, ..Options::default() }).await
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await.expect("the embedded backend is always available")
}

pub async fn spawn_with(options: Options) -> Option<TestApp> {
    let dir = tempfile::tempdir().unwrap();
    let mut drop_databases = None;
    let (database_url, redis_url) = match options.backend {
        Backend::Embedded => (None, None),
        Backend::Servers => {
            let base = mall_testkit::database_url()?;
            let redis = mall_testkit::redis_url()?;
            let name = mall_testkit::unique_name("mall_t");
            let ours = mall_storage::database_url_with_name(&base, &name).unwrap();
            drop_databases = Some((base, name));
            (Some(ours), Some(redis))
        }
    };
    let shared = Shared {
        data_dir: dir.path().to_owned(),
        database_url,
        database_pool_size: mall_storage::DEFAULT_POOL_SIZE,
        redis_url,
        cache_namespace: mall_testkit::unique_name("mall_t"),
        token_ttl: options.token_ttl,
        order_ttl: Duration::from_secs(1800),
        trusted_proxies: options.trusted_proxies,
        request_timeout: mall_gateway::DEFAULT_REQUEST_TIMEOUT,
        admin_email: ADMIN_EMAIL.into(),
        admin_password: Some(ADMIN_PASSWORD.into()),
        signing_key: None,
        auth_keys_file: options.auth_keys_file,
        rate_limits: mall::config::RateLimits::default(),
        drain_delay: Some(options.drain),
        password_hash_concurrency: None,
        search_concurrency: None,
    };
    let start = mall::StartOptions {
        gateway: mall_gateway::Config {
            limits: options.limits,
            keys: options.keys,
            ..mall::gateway_config(&shared)
        },
        gateway_listen: "127.0.0.1:0".into(),
        demo: options.demo,
    };
    let mall = mall::start(&shared, start).await.expect("the mall starts");
    Some(TestApp {
        url: mall.gateway_url(),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        mall: Some(mall),
        drop_databases,
        _dir: dir,
    })
}

impl TestApp {
    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.url)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        Self::reply(self.client.post(format!("{}{path}", self.url)).form(fields).send().await.unwrap()).await
    }

    pub async fn post_form_as(&self, path: &str, fields: &[(&str, &str)], token: &str) -> Reply {
        let req = self.client.post(format!("{}{path}", self.url)).bearer_auth(token).form(fields);
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Reply {
        let mut req =
            self.client.post(format!("{}{path}", self.url)).header("content-type", content_type).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn register(&self, email: &str) -> Reply {
        self.post_json(
            "/register",
            &json!({ "email": email, "password": PASSWORD, "confirm_password": PASSWORD }),
            None,
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post_json("/login", &json!({ "email": email, "password": password }), None).await
    }

    /// Registers a fresh customer and logs in: (user id, token).
    pub async fn customer(&self) -> (i64, String) {
        let email = format!("{}@example.com", mall_testkit::unique_name("user"));
        let reply = self.register(&email).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.data()["user_id"].as_i64().unwrap();
        let reply = self.login(&email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        (id, reply.data()["token"].as_str().unwrap().to_owned())
    }

    /// Starts another gateway with `config` in front of this mall's services and cache.
    pub async fn another_gateway(&self, config: mall_gateway::Config) -> ExtraGateway {
        let mall = self.mall.as_ref().expect("the mall is running");
        let peer = |name: &str| {
            let addr = mall.service_addr(name).expect("a service of the mall");
            // It calls as the mall's gateway: the services accept no one else.
            mall_runtime::channel(&format!("http://{addr}"))
                .unwrap()
                .with_identity(&mall.identities["gateway"], name)
        };
        let peers = mall_gateway::Peers {
            auth: peer("auth"),
            user: peer("user"),
            product: peer("product"),
            cart: peer("cart"),
            order: peer("order"),
            payment: peer("payment"),
            checkout: peer("checkout"),
        };
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let shutdown = mall_runtime::CancellationToken::new();
        let served =
            mall_gateway::startup(config, peers, mall.cache.clone(), listener, shutdown).await.unwrap();
        ExtraGateway { url: format!("http://{}", served.addr), served: Some(served) }
    }

    /// A GET to another gateway (or any base URL) with this app's client.
    pub async fn get_at(&self, base: &str, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    /// Stops one service, as a lost pod leaves it: nothing listens on its address any more.
    pub async fn stop_service(&mut self, name: &str) {
        let mall = self.mall.as_mut().expect("the mall is running");
        let at = mall.services.iter().position(|s| s.name == name).expect("a service of the mall");
        mall.services.remove(at).stop().await.expect("the service stops cleanly");
    }

    /// Stops the mall and drops the test's databases.
    pub async fn stop(mut self) {
        if let Some(mall) = self.mall.take() {
            mall.stop().await.expect("the mall stops cleanly");
        }
        if let Some((base, name)) = self.drop_databases.take() {
            mall_testkit::drop_databases(&base, &name).await;
        }
    }
}
