//! The rendered Helm charts: `ci/chart-checks.sh OUT_DIR` writes `<chart>-default.yaml` and
//! `<chart>-full.yaml` for both charts, and `mall-restore.yaml`; the tests read them from
//! `MALL_RENDERED_CHARTS`, or run that script themselves when a `helm` binary is at hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The charts and values sets `ci/chart-checks.sh` renders, as file stems.
pub const RENDERED: [&str; 5] =
    ["mall-operator-default", "mall-operator-full", "mall-default", "mall-full", "mall-restore"];

/// Where `ci/chart-checks.sh` keeps the helm it installs (`MALL_TOOLS_DIR`, else ~/.cache/mall-tools).
pub fn tools_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MALL_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/mall-tools"))
}

/// A usable `helm`: `MALL_HELM`, then `helm` on PATH, then the one `ci/chart-checks.sh` installed.
pub fn find_helm() -> Option<PathBuf> {
    let works =
        |p: &Path| Command::new(p).arg("version").arg("--short").output().is_ok_and(|o| o.status.success());
    if let Some(p) = std::env::var_os("MALL_HELM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| works(p));
    }
    if works(Path::new("helm")) {
        return Some(PathBuf::from("helm"));
    }
    tools_dir().map(|d| d.join("helm")).filter(|p| works(p))
}

/// Where the rendered charts are.
pub enum Rendered {
    /// A directory someone else filled (`MALL_RENDERED_CHARTS`).
    Given(PathBuf),
    /// Rendered by this process into a temporary directory.
    Here(tempfile::TempDir),
}

impl Rendered {
    pub fn dir(&self) -> &Path {
        match self {
            Rendered::Given(p) => p,
            Rendered::Here(t) => t.path(),
        }
    }

    /// The text of one rendered file (a stem of [`RENDERED`]).
    pub fn read(&self, stem: &str) -> Result<String> {
        let path = self.dir().join(format!("{stem}.yaml"));
        std::fs::read_to_string(&path).with_context(|| {
            format!("{} is missing: run ci/chart-checks.sh {}", path.display(), self.dir().display())
        })
    }
}

/// The rendered charts, or `None` (with the reason) when neither `MALL_RENDERED_CHARTS` nor a helm is
/// available.
pub fn rendered() -> Result<std::result::Result<Rendered, String>> {
    if let Some(dir) = std::env::var_os("MALL_RENDERED_CHARTS").filter(|d| !d.is_empty()) {
        return Ok(Ok(Rendered::Given(PathBuf::from(dir))));
    }
    let Some(helm) = find_helm() else {
        return Ok(Err("MALL_RENDERED_CHARTS is unset and no helm is on PATH or in ~/.cache/mall-tools \
                       (ci/chart-checks.sh installs one there)"
            .to_owned()));
    };
    let dir = tempfile::Builder::new().prefix("mall-rendered-charts").tempdir()?;
    let script = crate::repo_root().join("ci/chart-checks.sh");
    let mut command = Command::new("bash");
    // The script uses the helm found here (MALL_HELM comes first there too).
    command.arg(&script).arg(dir.path()).env("MALL_HELM", &helm);
    let output = command.output().with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(Ok(Rendered::Here(dir)))
}
