//! The harness of the browser tests: a chromedriver per test (ended when the test ends, however it
//! ends), a headless Chromium session driven through it with fantoccini, a screenshot after every step,
//! and on a failure the page it happened on (URL, the start of its `<main>`, `failure.png`).
//!
//! Without Chromium or ChromeDriver the tests are skipped with a note, except in CI (`CI=true`) or with
//! `MALL_BROWSER_REQUIRE=1`, where that is a failure: a pipeline must never pass by skipping them.
//!
//! Environment:
//! - `MALL_CHROMIUM`, `MALL_CHROMEDRIVER`: the browser and the driver (default `/usr/bin/chromium`,
//!   `/usr/bin/chromedriver`, else `chromium` / `chromedriver` on the `PATH`);
//! - `MALL_BROWSER_SHOTS`: where screenshots go (default `<target>/tmp/browser-shots`), a folder per test;
//! - `MALL_BROWSER_PARALLEL`: how many browsers run at once (default 2: each is a few hundred MB and a
//!   core's worth of work while it renders).

use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::helpers::{Options, TestApp, spawn_with};

/// How long a step waits for what it expects (an element, a URL) before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The window the desktop steps run in.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// Browsers running at once in this test binary.
static BROWSERS: LazyLock<Semaphore> = LazyLock::new(|| {
    let n = std::env::var("MALL_BROWSER_PARALLEL").ok().and_then(|v| v.trim().parse().ok());
    Semaphore::new(n.filter(|n| *n > 0).unwrap_or(2))
});

/// The browser and its driver.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// Skipped locally, a failure in CI (the same rule as `mall_testkit::database_url`).
pub fn required() -> bool {
    let set = |var: &str, yes: &[&str]| {
        std::env::var(var).is_ok_and(|v| yes.iter().any(|y| v.trim().eq_ignore_ascii_case(y)))
    };
    set("CI", &["true", "1"]) || set("MALL_BROWSER_REQUIRE", &["1", "true"])
}

/// `var`, else the first of `defaults` that exists, else `name` on the `PATH`.
fn locate(var: &str, defaults: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    defaults.iter().map(PathBuf::from).chain(on_path).find(|p| p.is_file())
}

fn tools(test: &str) -> Option<Tools> {
    let chromium = locate("MALL_CHROMIUM", &["/usr/bin/chromium"], "chromium");
    let chromedriver = locate("MALL_CHROMEDRIVER", &["/usr/bin/chromedriver"], "chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools { chromium, chromedriver }),
        (chromium, chromedriver) => {
            let missing: Vec<&str> = [
                (chromium.is_none(), "chromium (MALL_CHROMIUM)"),
                (chromedriver.is_none(), "chromedriver (MALL_CHROMEDRIVER)"),
            ]
            .into_iter()
            .filter_map(|(gone, what)| gone.then_some(what))
            .collect();
            let missing = missing.join(" and ");
            if required() {
                panic!(
                    "{test}: {missing} not found, and CI=true or MALL_BROWSER_REQUIRE=1: the browser tests \
                     must not be skipped (apt-get install chromium chromium-driver)"
                );
            }
            eprintln!("note: {missing} not found; skipping the browser test {test}");
            None
        }
    }
}

/// Where a test's screenshots go: `$MALL_BROWSER_SHOTS/<test>` or `<target>/tmp/browser-shots/<test>`.
pub fn shots_root() -> PathBuf {
    std::env::var_os("MALL_BROWSER_SHOTS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-shots"))
}

/// A chromedriver of this test's own, on a free port. Dropping it ends it and its browsers.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start(tools: &Tools, log: &Path) -> Result<Driver> {
        let mut last = None;
        // The port is free when asked for, but another process may take it before chromedriver binds
        // it: then chromedriver exits, and another port is tried.
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
            let log_file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
            let child = Command::new(&tools.chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("start {}", tools.chromedriver.display()))?;
            let mut driver = Driver { child, port };
            match driver.listening().await {
                Ok(()) => return Ok(driver),
                Err(e) => last = Some(e),
            }
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        Err(last.unwrap_or_else(|| anyhow!("no attempt made")).context(format!("chromedriver's log:\n{log}")))
    }

    /// Waits until chromedriver accepts connections (it exiting first is a failure).
    async fn listening(&mut self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("chromedriver exited before it listened on port {}: {status}", self.port);
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {} within 20s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `GET /shutdown` makes chromedriver quit its browsers before it exits; a plain kill would
        // leave a Chromium behind whose session was not closed (a test that failed half-way).
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let _ = s.read(&mut [0; 256]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Inner {
    // Dropped in this order: the session, then its driver.
    client: Client,
    base: String,
    dir: PathBuf,
    step: AtomicU32,
    _driver: Driver,
}

/// One test's browser, pointed at its mall (`base`). Cheap to clone.
#[derive(Clone)]
pub struct Browser(Arc<Inner>);

/// Runs `scenario` in a fresh headless Chromium against a fresh mall with the demo catalog. On a
/// failure (an error or a panic) it writes `failure.png` and fails with the URL and the page.
pub async fn run<F, Fut>(test: &'static str, scenario: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let Some(tools) = tools(test) else { return };
    let queued = Instant::now();
    let _permit = BROWSERS.acquire().await.expect("the semaphore is never closed");
    let started = Instant::now();
    let dir = shots_root().join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    eprintln!("{test}: screenshots in {}", dir.display());

    let app = spawn_with(Options { demo: true, ..Options::default() }).await.expect("the embedded mall");
    let browser = match Browser::open_session(&tools, &app, &dir).await {
        Ok(b) => b,
        Err(e) => panic!("{test}: cannot start the browser: {e:#}"),
    };
    let outcome = AssertUnwindSafe(scenario(browser.clone())).catch_unwind().await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into()),
        ),
    };
    let page = match &failure {
        Some(_) => browser.failure_report().await,
        None => String::new(),
    };
    browser.close().await;
    app.stop().await;
    if let Some(failure) = failure {
        panic!(
            "{test} failed after {:.1}s: {failure}\n{page}\nscreenshots: {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    let waited = started.duration_since(queued);
    eprintln!(
        "{test}: passed in {:.1}s (after {:.1}s waiting for a browser slot); screenshots in {}",
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64(),
        dir.display()
    );
}

/// A CSS selector's locator.
fn css(selector: &str) -> Locator<'_> {
    Locator::Css(selector)
}

impl Browser {
    async fn open_session(tools: &Tools, app: &TestApp, dir: &Path) -> Result<Browser> {
        let driver = Driver::start(tools, &dir.join("chromedriver.log")).await?;
        let (w, h) = DESKTOP;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={w},{h}"),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object") };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .with_context(|| {
                let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
                format!("new WebDriver session (chromedriver's log:\n{log})")
            })?;
        Ok(Browser(Arc::new(Inner {
            client,
            base: app.url.clone(),
            dir: dir.to_owned(),
            step: AtomicU32::new(0),
            _driver: driver,
        })))
    }

    async fn close(&self) {
        let _ = self.0.client.clone().close().await;
    }

    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// The mall's base URL (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// Goes to `path` on the mall.
    pub async fn open(&self, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.base());
        self.client().goto(&url).await.with_context(|| format!("open {url}"))
    }

    /// Writes `NN-step.png` of what the window shows now.
    pub async fn shot(&self, step: &str) -> Result<()> {
        let n = self.0.step.fetch_add(1, Ordering::Relaxed) + 1;
        let png = self.client().screenshot().await.with_context(|| format!("screenshot {step}"))?;
        let path = self.0.dir.join(format!("{n:02}-{step}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))
    }

    /// Scrolls the element to the middle of the window, then [`shot`](Self::shot).
    pub async fn shot_at(&self, step: &str, selector: &str) -> Result<()> {
        let el = self.find(selector).await?;
        self.client()
            .execute("arguments[0].scrollIntoView({block: 'center'});", vec![serde_json::to_value(&el)?])
            .await?;
        self.shot(step).await
    }

    /// The current URL's path, and its query after a `?` when it has one.
    pub async fn path(&self) -> Result<String> {
        let url = self.client().current_url().await?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// Waits until the current path (and query) satisfies `ok`; fails naming `what` was expected.
    pub async fn wait_path(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let path = self.path().await?;
            if ok(&path) {
                return Ok(path);
            }
            if Instant::now() > deadline {
                bail!("expected to be at {what}, but the browser is at {path}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `selector` selects, waiting for it to appear.
    pub async fn find(&self, selector: &str) -> Result<Element> {
        self.client()
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(100))
            .for_element(css(selector))
            .await
            .with_context(|| format!("no element {selector} on the page"))
    }

    /// Every element `selector` selects now (none is no failure).
    pub async fn all(&self, selector: &str) -> Result<Vec<Element>> {
        Ok(self.client().find_all(css(selector)).await?)
    }

    pub async fn exists(&self, selector: &str) -> Result<bool> {
        Ok(!self.all(selector).await?.is_empty())
    }

    /// Fails when `selector` selects anything.
    pub async fn absent(&self, selector: &str, why: &str) -> Result<()> {
        ensure!(!self.exists(selector).await?, "{selector} should not be on the page: {why}");
        Ok(())
    }

    /// Clicks what leads to another page (a link, a form's button) and waits until that page has
    /// loaded: a new document, even when its URL is the same (a form sent to its own page).
    pub async fn click_through(&self, selector: &str) -> Result<()> {
        let el = self.find(selector).await?;
        self.through(el, selector).await
    }

    /// [`click_through`](Self::click_through) on an element found otherwise.
    pub async fn through(&self, el: Element, what: &str) -> Result<()> {
        self.js("window.__mallLeaving = true;").await?;
        el.click().await.with_context(|| format!("click {what}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            // While the next page loads, a script may fail: that is waiting too.
            let state =
                self.js("return window.__mallLeaving === true ? 'not yet' : document.readyState").await.ok();
            if state == Some(json!("complete")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("clicking {what} did not lead to a loaded page within {PATIENCE:?} (state: {state:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces what the input holds with `text`, typed as a person would.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<()> {
        let el = self.find(selector).await?;
        el.clear().await.with_context(|| format!("clear {selector}"))?;
        el.send_keys(text).await.with_context(|| format!("type into {selector}"))
    }

    /// The element's visible text, trimmed.
    pub async fn text(&self, selector: &str) -> Result<String> {
        Ok(self.find(selector).await?.text().await?.trim().to_owned())
    }

    /// An input's current value.
    pub async fn value(&self, selector: &str) -> Result<String> {
        Ok(self.find(selector).await?.prop("value").await?.unwrap_or_default())
    }

    pub async fn attr(&self, selector: &str, name: &str) -> Result<Option<String>> {
        Ok(self.find(selector).await?.attr(name).await?)
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn js(&self, script: &str) -> Result<Value> {
        self.client().execute(script, vec![]).await.with_context(|| format!("run script: {script}"))
    }

    /// Changes the window's size and checks what the page gets to lay out in.
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client().set_window_size(width, height).await?;
        let inner = self.js("return window.innerWidth").await?;
        ensure!(inner == json!(width), "the window is {width} wide, but the page's viewport is {inner}px");
        Ok(())
    }

    /// What a failure report shows: the URL, the start of the page's `<main>` (or of the page), and
    /// `failure.png`.
    async fn failure_report(&self) -> String {
        let mut out = String::new();
        let url = self.client().current_url().await.map(|u| u.to_string());
        let _ = writeln!(out, "at: {}", url.unwrap_or_else(|e| format!("(no URL: {e})")));
        match self.client().source().await {
            Ok(source) => {
                let from = source.find("<main").unwrap_or(0);
                let snippet: String = source[from..].chars().take(4000).collect();
                let _ = writeln!(
                    out,
                    "page source from {}:\n{snippet}",
                    if from > 0 { "<main>" } else { "the start" }
                );
            }
            Err(e) => {
                let _ = writeln!(out, "(no page source: {e})");
            }
        }
        let path = self.0.dir.join("failure.png");
        match self.client().screenshot().await.map(|png| std::fs::write(&path, png)) {
            Ok(Ok(())) => {
                let _ = writeln!(out, "screenshot: {}", path.display());
            }
            Ok(Err(e)) => {
                let _ = writeln!(out, "(failure.png not written: {e})");
            }
            Err(e) => {
                let _ = writeln!(out, "(no screenshot: {e})");
            }
        }
        out
    }
}
