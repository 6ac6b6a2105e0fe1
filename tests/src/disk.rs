//! A collector whose data directory is a small tmpfs, and filling it to
//! the last byte: storage outages on demand. Mounting needs root, like the
//! capture tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{collector_toml, free_port, pki};

/// Unmounts the test's small filesystem however the test ends.
#[derive(Debug)]
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A collector (in this process) whose data directory is a tmpfs of `size`
/// (`"16m"`), with `limits` lines added to its `[limits]` table and `admin`
/// lines to its `[admin]` table.
// The PKI lock only keeps other test threads' issuers out while
// registrations are imported; no task of this runtime contends for it.
#[allow(clippy::await_holding_lock)]
pub async fn collector_on_small_disk_with(
    size: &str,
    limits: &str,
    admin: &str,
) -> (tempfile::TempDir, Mounted, glimpse_collector::config::CollectorConfig, glimpse_collector::Collector) {
    collector_on_small_disk_edited(size, |text| {
        text.replace("[limits]\n", &format!("[limits]\n{limits}\n"))
            .replace("[admin]\n", &format!("[admin]\n{admin}\n"))
    })
    .await
}

/// [`collector_on_small_disk_with`] with the config text changed by `edit`
/// (whole tables appended, such as `[alerts]`).
#[allow(clippy::await_holding_lock)]
pub async fn collector_on_small_disk_edited(
    size: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, Mounted, glimpse_collector::config::CollectorConfig, glimpse_collector::Collector) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    // mode=0700: a tmpfs root is 1777 by default, which the collector
    // refuses as a data directory.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "glimpse-full-disk-test"])
        .arg(&data)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mounting a small tmpfs for the full-disk test needs root");
    let unmount = Mounted(data.clone());
    let master = dir.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).expect("master key");
    let text = edit(collector_toml(&data, &master, free_port()));
    std::fs::write(dir.path().join("collector.toml"), text).expect("write config");
    let config =
        glimpse_collector::config::CollectorConfig::load(&dir.path().join("collector.toml")).expect("load config");
    let collector = {
        let _guard = pki().lock();
        glimpse_collector::Collector::start(config.clone()).await.expect("collector starts")
    };
    (dir, unmount, config, collector)
}

/// Fills the filesystem holding `dir` with one file, to the last byte;
/// removing the file frees it again.
pub fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![0xa5u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    path
}
