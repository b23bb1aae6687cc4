//! The served OpenAPI 3 document is exact: schemathesis, a property-based API fuzzer, sends
//! requests generated from it (valid and invalid ones, with a token) and every answer must be
//! a documented status with a documented content type and a body matching its schema, and
//! never a server error. Both served documents must also be valid OpenAPI.

use std::path::Path;
use std::process::Command;

use crate::auth::{secured, token};
use crate::harness::Stack;

/// Test cases per operation and phase: enough to reach every documented error of the
/// routes, few enough that the run stays well under a minute on a 2-core machine.
const EXAMPLES_PER_OPERATION: &str = "40";
/// A fixed seed makes a failure reproducible: the same arguments generate the same requests.
const SEED: &str = "17";
/// The checks that make "exact" testable: a server error, a status, a content type, a body or
/// a required header the document does not describe each fail the run, and so does a method
/// the document does not list that is answered with anything but 405 and a true `Allow`. The
/// checks of which requests are accepted are left out: the document cannot say that
/// `toWalletId` belongs to transfers only, or how large `limit` may be under the configuration.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,\
                      unsupported_method,allow_header_conformance";

/// The schemathesis executable, installed by `scripts/tools.sh fuzzer` when missing.
fn schemathesis() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tools.sh");
    let output = Command::new(&script)
        .arg("fuzzer")
        .output()
        .expect("scripts/tools.sh runs");
    assert!(
        output.status.success(),
        "cannot install schemathesis: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn generated_requests_get_only_documented_answers() {
    let executable = schemathesis();
    let stack = Stack::start(2);
    let secret = token(&stack, "fuzz", "read,write");
    // Generated `Prefer: wait=N` headers would each hold a request for up to N seconds.
    let server = secured(
        &stack,
        &[("WALLET_HTTP__PREFER_WAIT_MAX_S", "1".to_owned())],
    );
    let _worker = stack.work("work-1");
    documents_are_valid(&executable, &server.base);
    let workdir = tempfile::tempdir().expect("temp dir");
    let authorization = format!("Authorization: Bearer {secret}");
    let output = Command::new(&executable)
        .args(["run", &format!("{}/openapi/v3.json", server.base)])
        .args(["--url", &server.base])
        .args(["--header", &authorization])
        .args(["--checks", CHECKS])
        .args(["--max-examples", EXAMPLES_PER_OPERATION])
        .args(["--seed", SEED])
        // One worker: with two, the fuzzer's threads parse Python source at once, which
        // CPython 3.11.7 can fail with "AST constructor recursion depth mismatch", an error
        // of the tool, not of the API.
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(workdir.path())
        .output()
        .expect("schemathesis runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not describe (its report is above; \
         `{executable} run` with the same arguments and --seed {SEED} reproduces them)"
    );
}

/// Both served documents validate as OpenAPI (2.0 and 3.0), as a client generator needs,
/// with the validator installed beside `schemathesis`.
fn documents_are_valid(schemathesis: &str, base: &str) {
    let python = Path::new(schemathesis).with_file_name("python");
    let check = "import json, sys, urllib.request\n\
                 from openapi_spec_validator import validate\n\
                 for url in sys.argv[1:]:\n    \
                     validate(json.load(urllib.request.urlopen(url)))\n";
    let output = Command::new(&python)
        .args(["-c", check])
        .arg(format!("{base}/openapi/v2.json"))
        .arg(format!("{base}/openapi/v3.json"))
        .output()
        .expect("the validator runs");
    assert!(
        output.status.success(),
        "a served OpenAPI document is invalid: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
