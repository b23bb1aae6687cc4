//! Packaging and documentation checks: the compose file is valid, and what README.md,
//! compose.yaml and the Dockerfile say about configuration matches config.toml.example,
//! which a unit test in src/config.rs keeps equal to the built-in defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    let path = root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path:?}: {error}"))
}

/// `section.key` → the default exactly as written after `=` in config.toml.example.
fn example_defaults() -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    let mut section: Option<String> = None;
    for (number, line) in read("config.toml.example").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("config.toml.example:{}: not `key = value`", number + 1));
        let section = section
            .as_deref()
            .unwrap_or_else(|| panic!("config.toml.example:{}: key outside a section", number + 1));
        let name = format!("{section}.{}", key.trim());
        let previous = defaults.insert(name.clone(), value.trim().to_owned());
        assert!(
            previous.is_none(),
            "config.toml.example sets `{name}` twice"
        );
    }
    assert!(!defaults.is_empty(), "config.toml.example holds no keys");
    defaults
}

fn code_span(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

/// The README's configuration table: rows `| `section.key` | `default` | meaning |` under the
/// `## Configuration` heading, `section.key` → default.
fn readme_defaults() -> BTreeMap<String, String> {
    let readme = read("README.md");
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|line| line.trim() != "## Configuration")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect();
    assert!(
        !section.is_empty(),
        "README.md has no `## Configuration` section"
    );
    let mut defaults = BTreeMap::new();
    for line in section.iter().map(|line| line.trim()) {
        let Some(row) = line.strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0] == "key" || cells[0].chars().all(|c| "-: ".contains(c)) {
            continue;
        }
        let (Some(key), Some(default)) = (code_span(cells[0]), code_span(cells[1])) else {
            panic!("README.md configuration row is not | `section.key` | `default` | …: {line}");
        };
        let previous = defaults.insert(key.to_owned(), default.to_owned());
        assert!(previous.is_none(), "README.md lists `{key}` twice");
    }
    defaults
}

#[test]
fn compose_file_is_valid() {
    let output = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker-compose runs (`scripts/tools.sh services` installs it)");
    assert!(
        output.status.success(),
        "docker-compose -f compose.yaml config -q: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn readme_configuration_table_matches_the_example_file() {
    let example = example_defaults();
    let readme = readme_defaults();
    let missing: Vec<&String> = example
        .keys()
        .filter(|k| !readme.contains_key(*k))
        .collect();
    let unknown: Vec<&String> = readme
        .keys()
        .filter(|k| !example.contains_key(*k))
        .collect();
    let different: Vec<String> = example
        .iter()
        .filter_map(|(key, value)| {
            let documented = readme.get(key)?;
            (documented != value)
                .then(|| format!("{key}: README `{documented}`, example `{value}`"))
        })
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && different.is_empty(),
        "README.md configuration table and config.toml.example differ:\n\
         missing from README: {missing:?}\nnot in config.toml.example: {unknown:?}\n\
         different defaults: {different:#?}"
    );
}

/// Every `WALLET_*` variable in the container files must name a real key: a misspelt one is
/// either refused at startup or, worse, lost in a scaled deployment's logs.
#[test]
fn container_environment_names_real_keys() {
    let keys = example_defaults();
    for file in ["compose.yaml", "Dockerfile"] {
        let text = read(file);
        let mut found = 0;
        for (start, _) in text.match_indices("WALLET_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name == "WALLET_" {
                continue; // prose such as `WALLET_*`
            }
            let (section, key) = name["WALLET_".len()..]
                .split_once("__")
                .unwrap_or_else(|| panic!("{file}: {name} is not WALLET_SECTION__KEY"));
            let key = format!("{}.{}", section.to_lowercase(), key.to_lowercase());
            assert!(
                keys.contains_key(&key),
                "{file}: {name} names no key ({key})"
            );
            found += 1;
        }
        assert!(found > 0, "{file} sets no WALLET_* variable");
        // Inside a container, the default 127.0.0.1 is unreachable from other containers.
        for line in text.lines().filter(|l| l.contains("WALLET_HTTP__LISTEN")) {
            assert!(line.contains("0.0.0.0:8080"), "{file}: {}", line.trim());
        }
    }
}

/// `docker compose up --scale work=3` fails when `work` has a fixed container name or host
/// port; `config -q` does not catch either, so the resolved file (anchors merged) is read.
#[test]
fn work_service_can_scale() {
    let output = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(root())
        .output()
        .expect("docker-compose runs (`scripts/tools.sh services` installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved = String::from_utf8_lossy(&output.stdout);
    let work: Vec<&str> = resolved
        .lines()
        .skip_while(|line| *line != "  work:")
        .skip(1)
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .collect();
    assert!(
        work.iter().any(|line| line.trim() == "- work"),
        "no `work` service running `wallet work` in:\n{resolved}"
    );
    for line in &work {
        let setting = line.trim_start();
        assert!(
            !setting.starts_with("container_name:") && !setting.starts_with("ports:"),
            "the work service must not set `{setting}`"
        );
    }
}

/// Proves compose.yaml runs the Kafka version the local stack and the tests run.
#[test]
fn one_kafka_version_everywhere() {
    let pom = read("scripts/kafka/pom.xml");
    let version = pom
        .split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim().to_owned())
        .expect("the pom names kafka.version");
    assert!(version.starts_with("4."), "Kafka 4.x, not {version}");
    let compose = read("compose.yaml");
    assert!(
        compose.contains(&format!("image: apache/kafka:{version}\n")),
        "compose.yaml runs apache/kafka:{version}"
    );
}
