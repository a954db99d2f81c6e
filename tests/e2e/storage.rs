//! Storage faults of the embedded inbox, on a real full disk (a small tmpfs this
//! test mounts and removes; needs root, as CI has): writes fail with a clear error,
//! `/healthz` says the inbox cannot write, and once space is back the inbox works
//! again without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wtgate::api_client::ApiClientError;

use crate::common::*;

/// A tmpfs mounted for the test, unmounted when dropped (also on failure).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills what is left of the disk; returns the file to remove to free it.
fn fill(disk: &Path) -> PathBuf {
    use std::io::Write;
    let path = disk.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_is_reported_and_the_inbox_recovers_without_a_restart() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root {
        eprintln!("SKIPPED: mounting a small disk needs root");
        return;
    }
    let disk = SmallDisk::mount("8m").expect("a tmpfs mounts");
    let server = TestServer::start_with_data(&disk.path().join("data")).await;
    let api = server.api_client(Some(API_KEY));
    let mut ann = server.client("/notifications", "ann").await;
    let first = api.notify("ann", "ping", b"before").await.unwrap();
    expect_event(&mut ann, "the first notification", notification).await;
    assert_eq!(api.health().await.unwrap().status, "ok");

    let filler = fill(disk.path());
    let body = vec![b'x'; 16 * 1024];
    let mut failed = None;
    for _ in 0..2_000 {
        if let Err(e) = api.notify("ann", "ping", &body).await {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a full disk fails a write");
    assert!(
        matches!(
            failed,
            ApiClientError::Refused {
                status: 500..=599,
                ..
            }
        ),
        "{failed:?}"
    );
    let health = api.health().await.unwrap_err();
    let text = format!("{health:?}");
    assert!(text.contains("503") && text.contains("inbox"), "{text}");

    // Space comes back: the inbox writes again without a restart.
    std::fs::remove_file(filler).unwrap();
    let again = within("a write after the disk has space", async {
        loop {
            match api.notify("ann", "ping", b"after").await {
                Ok(id) => return id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(again > first);
    assert_eq!(api.health().await.unwrap().status, "ok");
    let (id, _, body) = expect_event(&mut ann, "the notification after recovery", |e| {
        notification(e).filter(|(_, _, body)| &body[..] == b"after")
    })
    .await;
    assert_eq!((id, &body[..]), (again, &b"after"[..]));
    drop(ann);
    server.stop().await;
}
