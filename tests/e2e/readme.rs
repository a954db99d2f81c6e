//! The README as a new user follows it: its shell examples run in order, in one shell,
//! against the dev server its quick start starts (the real binary, from an empty
//! directory); its configuration example is complete and says the defaults; its flag
//! table names every `serve` flag. A `sh` block is skipped only when the line before
//! it says why (`<!-- not run by tests/e2e/readme.rs: … -->`), so a new example is
//! tested unless someone decides otherwise.

use std::collections::BTreeSet;
use std::path::Path;

use wtgate::config::Config;

use crate::common::*;

const README: &str = include_str!("../../README.md");
const SKIP: &str = "<!-- not run by tests/e2e/readme.rs:";
/// The quick start's server command; the test runs the built binary instead.
const QUICK_START: &str = "cargo run --release -- ";

/// A fenced code block of the README.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    code: String,
    /// Why it is not run, from the marker line before it.
    skip: Option<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate();
    let mut previous = "";
    while let Some((i, line)) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let code: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| !l.starts_with("```"))
                .collect();
            let skip = previous
                .strip_prefix(SKIP)
                .map(|why| why.trim_end_matches("-->").trim().to_owned());
            out.push(Block {
                line: i + 1,
                lang: lang.trim().to_owned(),
                code: code.join("\n"),
                skip,
            });
        }
        if !line.trim().is_empty() {
            previous = line.trim();
        }
    }
    out
}

/// A port free for both UDP and TCP on `[::1]`, and a TCP port on 127.0.0.1.
fn free_ports() -> (u16, u16) {
    loop {
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            let demo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            return (port, demo.local_addr().unwrap().port());
        }
    }
}

/// The directory of the built `wtgate`, for `PATH`.
fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wtgate")).parent().unwrap()
}

#[tokio::test]
async fn shell_examples_run_in_order_against_the_quick_start_server() {
    let sh: Vec<Block> = blocks(README)
        .into_iter()
        .filter(|b| b.lang == "sh")
        .collect();
    assert!(sh.iter().all(|b| b.skip.as_deref() != Some("")), "{sh:?}");
    let mut runnable = sh.iter().filter(|b| b.skip.is_none());
    let quick_start = runnable.next().expect("a quick start");
    let serve = quick_start
        .code
        .trim()
        .strip_prefix(QUICK_START)
        .unwrap_or_else(|| {
            panic!("the first runnable sh block starts the server: {quick_start:?}")
        });

    // The README's ports, moved to free ones so this runs beside other tests.
    let (port, demo_port) = free_ports();
    let ports = |code: &str| {
        code.replace("4433", &port.to_string())
            .replace("8080", &demo_port.to_string())
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = serve.split_whitespace().map(str::to_owned).collect();
    args.extend([
        "--listen".into(),
        format!("[::1]:{port}"),
        "--demo-listen".into(),
        format!("127.0.0.1:{demo_port}"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(args[0], "serve", "the quick start runs the server: {serve}");
    let (mut server, banner) = spawn_serve(dir.path(), &args[1..], "demo page:").await;

    // Every other example, in order, in one shell, as a user types them.
    let mut script = String::from("set -euo pipefail\n");
    for block in runnable {
        script.push_str(&format!("echo '### README.md:{}' >&2\n", block.line));
        script.push_str(&ports(&block.code));
        script.push('\n');
    }
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = tokio::process::Command::new("bash");
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("WTGATE_")) {
        shell.env_remove(var);
    }
    let out = within(
        "the README's examples",
        shell
            .args(["-c", &script])
            .current_dir(dir.path())
            .env("PATH", path)
            // The CLI wrappers' default server, on the moved port.
            .env("WTGATE_SERVER", format!("https://localhost:{port}"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "a README example failed (the last ### line names its block)\n\
         --- script ---\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         --- server ---\n{banner}"
    );
    // What the examples print: a token, a notification id, a seq, health, metrics.
    for expected in [
        "eyJ",
        "{\"id\":",
        "{\"seq\":",
        "\"status\":\"ok\"",
        "wtgate_sessions{namespace=\"/chat\"}",
        "\"users\":",
        "{\"closed\":",
        "PASS",
    ] {
        assert!(stdout.contains(expected), "{expected}:\n{stdout}");
    }
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server is still up"
    );
}

#[test]
fn the_configuration_example_is_complete_and_shows_the_defaults() {
    let toml_blocks: Vec<Block> = blocks(README)
        .into_iter()
        .filter(|b| b.lang == "toml")
        .collect();
    let [example] = &toml_blocks[..] else {
        panic!("one toml example: {toml_blocks:?}");
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wtgate.toml");
    std::fs::write(&file, &example.code).unwrap();
    let parsed = Config::load(&file).expect("the README's example parses");
    assert_eq!(
        parsed,
        Config::default(),
        "the README says these are the defaults"
    );

    let written: toml::Table = example.code.parse().unwrap();
    let keys =
        |v: &toml::Value| -> BTreeSet<String> { v.as_table().unwrap().keys().cloned().collect() };
    let limits = toml::Value::try_from(&Config::default().limits).unwrap();
    assert_eq!(
        keys(&written["limits"]),
        keys(&limits),
        "every limit is shown"
    );
    for (name, ns) in &Config::default().namespaces {
        let shown = &written["namespaces"][name.trim_start_matches('/')];
        let all = toml::Value::try_from(ns).unwrap();
        assert_eq!(keys(shown), keys(&all), "every key of {name} is shown");
    }
    let hooks = toml::Value::try_from(&Config::default().namespaces["/chat"].hooks).unwrap();
    assert_eq!(
        keys(&written["namespaces"]["chat"]["hooks"]),
        keys(&hooks),
        "every hook key is shown"
    );
    let webhooks = toml::Value::try_from(&Config::default().webhooks).unwrap();
    assert_eq!(
        keys(&written["webhooks"]),
        keys(&webhooks),
        "every webhook key is shown"
    );
}

#[tokio::test]
async fn every_serve_flag_is_in_the_readme() {
    let out = run_wtgate(None, &["serve", "--help"], &[]).await;
    let help = stdout(&out);
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches([',', '.', ']', ')', ':', '`']))
        .filter(|w| !w.is_empty() && !["help", "version"].contains(w))
        .collect();
    assert!(flags.len() > 15, "{flags:?}");
    for flag in flags {
        assert!(
            README.contains(&format!("`--{flag}")) || README.contains(&format!(", `--{flag}`")),
            "README does not document serve --{flag}"
        );
    }
}
