//! `minidb shell` over the real binary: every command through a pseudo-terminal (rexpect),
//! against a running server and embedded on a data directory; `-c` and stdin scripts with
//! their exit codes; bad input; Ctrl-C and Ctrl-D. No test sleeps to order events: each
//! waits (with rexpect's 30 s deadline) for the output it expects, then for the prompt.
//!
//! `shell_memory_bench` (ignored; `make bench-shell`) prints the shell's peak RSS while
//! restoring, dumping and printing a generated 1M-document database.
#![cfg(feature = "server")]

mod api;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api::{command, Server};
use rexpect::process::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use serde_json::Value;

const PROMPT: &str = "minidb> ";
/// A prompt on a new line, as opposed to the prompt in a redraw of the line being edited.
const FRESH_PROMPT: &str = "\n\rminidb> ";
const TIMEOUT_MS: u64 = 30_000;

/// Where a shell under test works.
enum Target<'a> {
    Server(&'a Server),
    Dir(PathBuf),
}

impl Target<'_> {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Server(s) => vec!["--url".into(), s.base.clone()],
            Target::Dir(d) => vec!["--data-dir".into(), d.display().to_string()],
        }
    }
}

/// `minidb shell <target args> <args>` in `cwd`, with a terminal type rustyline edits on.
fn shell_command(cwd: &Path, target: &Target<'_>, args: &[&str]) -> Command {
    let mut cmd = command(cwd);
    cmd.arg("shell").args(target.args()).args(args);
    cmd.env("TERM", "xterm").env_remove("NO_COLOR");
    cmd
}

/// The shell in a pseudo-terminal, ANSI escapes stripped unless `raw`; waits for the
/// first prompt.
fn pty(cmd: Command, raw: bool) -> PtySession {
    let opts = Options::new()
        .timeout_ms(Some(TIMEOUT_MS))
        .strip_ansi_escape_codes(!raw);
    let mut s = spawn_with_options(cmd, opts).expect("spawn the shell in a pty");
    s.exp_string(PROMPT).expect("the first prompt");
    s
}

/// Sends `line`, waits for each of `expect` in order, then for the next prompt; returns
/// what came between the last expected text and the prompt.
fn run(s: &mut PtySession, line: &str, expect: &[&str]) -> String {
    s.send_line(line).expect("send");
    for e in expect {
        s.exp_string(e)
            .unwrap_or_else(|err| panic!("{line:?}: no {e:?}: {err}"));
    }
    s.exp_string(PROMPT)
        .unwrap_or_else(|err| panic!("{line:?}: no prompt after the output: {err}"))
}

/// Waits (bounded) for the shell to exit; its exit code.
fn exit_code(s: &mut PtySession) -> i32 {
    s.exp_eof().expect("the shell closes the terminal");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s.process().status() {
            Some(WaitStatus::Exited(_, code)) => return code,
            Some(WaitStatus::StillAlive) | None if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("the shell did not exit: {other:?}"),
        }
    }
}

/// Every command of the shell, in one session, with MiniDBGo's syntax.
fn every_command(target: &Target<'_>, tmp: &Path) {
    let mut s = pty(
        shell_command(tmp, target, &["--no-history", "--no-color"]),
        false,
    );
    run(
        &mut s,
        r#"insertOne products {"_id":"p1","name":"Laptop","price":1200}"#,
        &["Inserted p1 into products"],
    );
    run(
        &mut s,
        r#"insertMany products [{"_id":"p2","name":"Mouse","price":25},{"_id":"p3","name":"Pad","price":10}]"#,
        &["Inserted 2 of 2 documents into products"],
    );
    // Pretty on a terminal: `"key": value` with a space (the typed line has none).
    run(
        &mut s,
        r#"findOne products {"_id":"p2"}"#,
        &[r#""name": "Mouse""#],
    );
    let rest = run(
        &mut s,
        r#"findMany products {"price":{"$gt":20}}"#,
        &[r#""name": "Laptop""#, r#""name": "Mouse""#],
    );
    assert!(!rest.contains("Pad"), "{rest}");
    run(
        &mut s,
        r#"updateOne products {"_id":"p1"} {"$set":{"name":"Laptop Pro"}}"#,
        &["Updated p1 in products"],
    );
    run(
        &mut s,
        r#"findOne products {"name":"Laptop Pro"}"#,
        &[r#""_id": "p1""#, r#""price": 1200"#],
    );
    run(
        &mut s,
        r#"deleteOne products {"price":{"$lt":20}}"#,
        &["Deleted p3 from products"],
    );
    s.send_line("count products").expect("send");
    s.exp_regex("\n2\r?\n").expect("count 2");
    s.exp_string(PROMPT).expect("prompt");
    run(
        &mut s,
        "collections",
        &[r#""docCount": 2"#, r#""name": "products""#],
    );
    run(&mut s, "stats", &[r#""puts": "#]);
    let rest = run(
        &mut s,
        "dumpAll products",
        &[r#""_id": "p1""#, r#""_id": "p2""#],
    );
    assert!(!rest.contains("p3"), "{rest}");

    let dump = tmp.join("dump.json");
    run(
        &mut s,
        &format!("dumpDB {}", dump.display()),
        &[&format!(
            "Dumped DB to {} (2 documents in 1 collections)",
            dump.display()
        )],
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).expect("dump file")).expect("JSON");
    assert_eq!(written["products"].as_array().map(Vec::len), Some(2));
    assert_eq!(written["products"][0]["name"], "Laptop Pro");

    run(
        &mut s,
        r#"deleteOne products {"_id":"p1"}"#,
        &["Deleted p1 from products"],
    );
    run(
        &mut s,
        &format!("restoreDB {}", dump.display()),
        &[&format!("Restored DB from {}", dump.display())],
    );
    run(
        &mut s,
        r#"findOne products {"_id":"p1"}"#,
        &[r#""name": "Laptop Pro""#],
    );
    run(&mut s, "ttl products", &["ttl products: none"]);
    run(&mut s, "ttl products 3600", &["ttl products: 3600 s"]);
    run(&mut s, "TTL products", &["ttl products: 3600 s"]);
    run(&mut s, "ttl products off", &["ttl products: none"]);
    run(&mut s, "ttl products", &["ttl products: none"]);
    // p3 deleted first, then p1 and p2 written again by the restore; one line each.
    let rest = run(
        &mut s,
        "changes products",
        &[
            "  products/p3  deleted",
            "  products/p1\r\n",
            "  products/p2\r\n",
            "last_seq ",
        ],
    );
    assert!(
        !rest.contains("products/"),
        "one entry per document: {rest}"
    );
    let compacted = match target {
        Target::Server(_) => "Server: compaction",
        Target::Dir(_) => "Compaction complete",
    };
    run(&mut s, "compact", &[compacted]);
    let rest = run(
        &mut s,
        "help",
        &["Commands", "insertOne <collection> <jsonDoc>"],
    );
    for name in [
        "insertMany",
        "findOne",
        "findMany",
        "updateOne",
        "deleteOne",
        "count",
        "dumpAll",
        "dumpDB",
        "restoreDB",
        "collections",
        "stats",
        "compact",
        "ttl <collection> [<seconds>|off]",
        "changes [<collection>] [<since>]",
        "exit",
    ] {
        assert!(rest.contains(name), "help lacks {name}: {rest}");
    }
    run(
        &mut s,
        "help findMany",
        &["Usage: findMany <collection> [<jsonFilter>]", "example:"],
    );

    run(
        &mut s,
        "help changes",
        &["Usage: changes [<collection>] [<since>]", "example:"],
    );

    // A JSON argument over several lines: Enter inside `{` continues the input.
    s.send_line("insertOne products {").expect("send");
    run(
        &mut s,
        r#""_id": "m1", "tags": ["a","b"]}"#,
        &["Inserted m1 into products"],
    );

    // Tab completes the command, then the collection.
    s.send("cou\t").expect("send");
    s.send(" pro\t").expect("send");
    s.send_line("").expect("send");
    s.exp_regex("\n3\r?\n")
        .expect("count of the completed line");
    s.exp_string(PROMPT).expect("prompt");

    s.send_line("quit").expect("send");
    s.exp_string("Bye!").expect("Bye!");
    assert_eq!(exit_code(&mut s), 0, "every command succeeded");
}

#[test]
fn every_command_over_a_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), &[]);
    every_command(&Target::Server(&server), tmp.path());
    server.stop();
}

#[test]
fn every_command_embedded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    every_command(&Target::Dir(dir.clone()), tmp.path());
    // The session closed the engine: the directory opens again, with the documents.
    let out = script(
        &mut shell_command(tmp.path(), &Target::Dir(dir), &["-c", "count products"]),
        "",
    );
    assert_eq!(stdout(&out), "3\n", "{}", stderr(&out));
}

/// Bad input at the prompt: one `error:` line each, and the session goes on; Ctrl-C drops
/// a half-typed (multi-line) command; Ctrl-D leaves, with exit code 1 after failures.
fn bad_input(target: &Target<'_>, tmp: &Path) {
    let mut s = pty(
        shell_command(tmp, target, &["--no-history", "--no-color"]),
        false,
    );
    run(&mut s, r#"insertOne c {"_id":"a"}"#, &["Inserted a into c"]);
    run(
        &mut s,
        r#"findMany c {"price" 5}"#,
        &["error: invalid filter JSON at column 21: expected `:`"],
    );
    run(
        &mut s,
        "frobnicate c",
        &["error: Unknown command: frobnicate (type help for the list)"],
    );
    run(
        &mut s,
        "findMany c {}}",
        &["error: unexpected text at column 14"],
    );
    run(
        &mut s,
        r#"insertOne c {"_id":"a"}"#,
        &["error: ", "already exists"],
    );
    run(
        &mut s,
        r#"insertOne c {"name":"no id"}"#,
        &["error: ", "_id"],
    );
    run(
        &mut s,
        "updateOne c {}",
        &["error: Usage: updateOne <collection> <jsonFilter> <jsonUpdate>"],
    );
    run(
        &mut s,
        r#"findOne c {"_id":"zz"}"#,
        &[r#"error: no document in collection "c" matches {"_id":"zz"}"#],
    );
    // Unbalanced brackets continue the input; Ctrl-C drops all of it.
    s.send_line(r#"insertOne c {"_id":"b","#).expect("send");
    s.send_line(r#""n": [1,"#).expect("send");
    s.send_control('c').expect("ctrl-c");
    // The fresh prompt (rustyline's redraws of the input put the prompt after `\r`);
    // rustyline drops input typed before it.
    s.exp_string(FRESH_PROMPT)
        .expect("a new prompt after Ctrl-C");
    s.send_line("count c").expect("send");
    s.exp_regex("\n1\r?\n")
        .expect("count 1: the half-typed insert was dropped");
    s.exp_string(PROMPT).expect("prompt");
    // Ctrl-D on an empty line leaves; 7 commands failed.
    s.send_control('d').expect("ctrl-d");
    s.exp_string("Bye!").expect("Bye!");
    assert_eq!(exit_code(&mut s), 1);
}

#[test]
fn bad_input_over_a_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), &[]);
    bad_input(&Target::Server(&server), tmp.path());
    server.stop();
}

#[test]
fn bad_input_embedded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    bad_input(&Target::Dir(tmp.path().join("data")), tmp.path());
}

/// Colours on a terminal (keys yellow, strings cyan, numbers green, errors red); none
/// with --no-color.
#[test]
fn colours_on_a_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = Target::Dir(tmp.path().join("data"));
    let mut s = pty(shell_command(tmp.path(), &target, &["--no-history"]), true);
    run(
        &mut s,
        r#"insertOne c {"_id":"a","n":7}"#,
        &["Inserted a into c"],
    );
    run(
        &mut s,
        r#"findOne c {"_id":"a"}"#,
        &[
            "\x1b[33m\"_id\"\x1b[0m: \x1b[36m\"a\"\x1b[0m",
            "\x1b[33m\"n\"\x1b[0m: \x1b[32m7\x1b[0m",
        ],
    );
    run(&mut s, r#"deleteOne c {"_id":"a"}"#, &["Deleted a from c"]);
    run(
        &mut s,
        "changes c",
        &[
            "\x1b[32m",
            "\x1b[0m  \x1b[36mc/a\x1b[0m  \x1b[31mdeleted\x1b[0m",
        ],
    );
    run(
        &mut s,
        r#"insertOne c {"_id":"a","n":7}"#,
        &["Inserted a into c"],
    );
    run(&mut s, "nope", &["\x1b[31merror: Unknown command: nope"]);
    s.send_line("exit").expect("send");
    assert_eq!(exit_code(&mut s), 1);

    let mut s = pty(
        shell_command(tmp.path(), &target, &["--no-history", "--no-color"]),
        true,
    );
    let rest = run(&mut s, r#"findOne c {"_id":"a"}"#, &["\"n\": 7"]);
    assert!(!rest.contains("\x1b[3"), "{rest:?}");
    s.send_line("exit").expect("send");
    assert_eq!(exit_code(&mut s), 0);
}

/// History is kept in the file across sessions (mode 0600); Up recalls it.
#[test]
fn history_persists_across_sessions() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = Target::Dir(tmp.path().join("data"));
    let history = tmp.path().join("hist");
    let hist = history.display().to_string();
    let args = ["--no-color", "--history", hist.as_str()];
    let mut s = pty(shell_command(tmp.path(), &target, &args), false);
    run(
        &mut s,
        r#"insertOne h {"_id":"h1"}"#,
        &["Inserted h1 into h"],
    );
    run(&mut s, r#"findOne h {"_id":"h1"}"#, &[r#""_id": "h1""#]);
    s.send_line("exit").expect("send");
    assert_eq!(exit_code(&mut s), 0);
    let text = std::fs::read_to_string(&history).expect("history file");
    assert!(text.contains(r#"findOne h {"_id":"h1"}"#), "{text}");
    let mode = std::fs::metadata(&history)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut s = pty(shell_command(tmp.path(), &target, &args), false);
    // Up arrow twice, Enter: the last command before `exit` of the previous session runs again.
    s.send("\x1b[A\x1b[A").expect("up, up (past `exit`)");
    run(&mut s, "", &[r#""_id": "h1""#]);
    s.send_line("exit").expect("send");
    assert_eq!(exit_code(&mut s), 0);
}

/// A server that answers `/api/health` and holds every other request unanswered (reporting
/// its request line, and every request head it saw, on the channels): a command that runs
/// until Ctrl-C.
fn hanging_server() -> (String, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (held_tx, held) = mpsc::channel();
    let (heads_tx, heads) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let held_tx = held_tx.clone();
            let heads_tx = heads_tx.clone();
            std::thread::spawn(move || serve_held(stream, &held_tx, &heads_tx));
        }
    });
    (format!("http://{addr}"), held, heads)
}

fn serve_held(stream: TcpStream, held: &mpsc::Sender<String>, heads: &mpsc::Sender<String>) {
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let _ = heads.send(head.clone());
        let first = head.lines().next().unwrap_or("").to_owned();
        if first.starts_with("GET /api/health ") {
            let body = r#"{"status":"ok"}"#;
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            let _ = held.send(first);
            // Never answered: wait for the client to go away.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            return;
        }
    }
}

/// Ctrl-C while a command waits for the server cancels it; the session goes on.
#[test]
fn ctrl_c_cancels_a_running_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (url, held, _heads) = hanging_server();
    let mut cmd = command(tmp.path());
    cmd.args(["shell", "--url", &url, "--no-history", "--no-color"])
        .env("TERM", "xterm");
    let mut s = pty(cmd, false);
    s.send_line("findMany c").expect("send");
    let line = held
        .recv_timeout(Duration::from_secs(30))
        .expect("the search reached the server");
    assert!(line.starts_with("POST /api/c/_search?"), "{line}");
    // The command is running (the terminal is no longer raw): Ctrl-C is SIGINT.
    s.send_control('c').expect("ctrl-c");
    s.exp_string("error: cancelled").expect("cancelled");
    s.exp_string(PROMPT).expect("prompt after the cancel");
    run(
        &mut s,
        "help count",
        &["Usage: count <collection> [<jsonFilter>]"],
    );
    s.send_control('d').expect("ctrl-d");
    assert_eq!(exit_code(&mut s), 1);
}

/// `--api-key` (and MINIDB_API_KEY) is sent as `Authorization: Bearer <key>`.
#[test]
fn api_key_is_sent_as_a_bearer_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (url, _held, heads) = hanging_server();
    let mut cmd = command(tmp.path());
    cmd.args(["shell", "--url", &url, "-c", "help"])
        .env("MINIDB_API_KEY", "k-123")
        .stdin(Stdio::null());
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let head = heads
        .recv_timeout(Duration::from_secs(30))
        .expect("a request");
    assert!(head.starts_with("GET /api/health "), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer k-123")),
        "{head}"
    );
    // Without a key, no Authorization header.
    let out = command(tmp.path())
        .args(["shell", "--url", &url, "-c", "help"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success());
    let head = heads
        .recv_timeout(Duration::from_secs(30))
        .expect("a request");
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "{head}"
    );
}

fn script(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `-c` runs its commands, plain (no colour, compact JSON), and the exit code says whether
/// any failed; each failure is one `error:` line naming its line.
fn c_scripts(target: &Target<'_>, tmp: &Path) {
    let ok = script(
        &mut shell_command(
            tmp,
            target,
            &[
                "-c",
                r#"insertMany c [{"_id":"a","n":1},{"_id":"b","n":2}]"#,
            ],
        ),
        "",
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "Inserted 2 of 2 documents into c\n");
    assert_eq!(stderr(&ok), "");

    let found = script(
        &mut shell_command(tmp, target, &["-c", r#"findMany c {"n":{"$gte":1}}"#]),
        "",
    );
    assert!(found.status.success(), "{}", stderr(&found));
    assert_eq!(
        stdout(&found),
        "{\"_id\":\"a\",\"n\":1}\n{\"_id\":\"b\",\"n\":2}\n"
    );

    let missing = script(
        &mut shell_command(tmp, target, &["-c", r#"findOne c {"_id":"zz"}"#]),
        "",
    );
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing), "");
    assert_eq!(
        stderr(&missing),
        "error: no document in collection \"c\" matches {\"_id\":\"zz\"}\n"
    );

    let mixed = script(
        &mut shell_command(tmp, target, &["-c", "count c\nbogus\ncount c {\"n\":2}"]),
        "",
    );
    assert_eq!(mixed.status.code(), Some(1));
    assert_eq!(stdout(&mixed), "2\n1\n");
    assert_eq!(
        stderr(&mixed),
        "error: line 2: Unknown command: bogus (type help for the list)\n"
    );
}

/// `ttl` and `changes` in scripts: exact output, and bad values are one line with exit 1
/// that change nothing.
fn ttl_and_changes_scripts(target: &Target<'_>, tmp: &Path) {
    let sh = |line: &str| script(&mut shell_command(tmp, target, &["-c", line]), "");
    let out = sh("ttl c\nttl c 60\nttl c");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ttl c: none\nttl c: 60 s\nttl c: 60 s\n");

    let lifetime = "the lifetime must be a whole number of seconds from 1 to 315360000, or off";
    for (bad, word) in [
        ("ttl c abc", "abc"),
        ("ttl c 0", "0"),
        ("ttl c 315360001", "315360001"),
    ] {
        let out = sh(bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert_eq!(stdout(&out), "", "{bad}");
        assert_eq!(stderr(&out), format!("error: {lifetime}; got \"{word}\"\n"));
    }
    let out = sh("ttl c\nttl c off\nttl c");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ttl c: 60 s\nttl c: none\nttl c: none\n");

    let out = sh("changes c x");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: since must be a sequence number (a whole number, as last_seq prints); \
         got \"x\"\n"
    );

    // a and b were inserted in one batch (by c_scripts): one sequence number.
    let out = sh("changes c");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let seq = lines[0].strip_suffix("  c/a").expect("the entry of a");
    assert_eq!(lines[1], format!("{seq}  c/b"));
    let last: u64 = lines[2]
        .strip_prefix("last_seq ")
        .and_then(|n| n.parse().ok())
        .expect("last_seq N");
    assert!(last >= seq.parse::<u64>().expect("a number"), "{text}");
    // Resumed from last_seq: nothing new, then exactly the deletion made after it, in
    // this collection's feed and in the feed of every collection.
    let out = sh(&format!("changes c {last}\ndeleteOne c {{\"_id\":\"a\"}}"));
    assert_eq!(stdout(&out), format!("last_seq {last}\nDeleted a from c\n"));
    for feed in [format!("changes c {last}"), format!("changes {last}")] {
        let out = sh(&feed);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{feed}: {text}");
        let seq: u64 = lines[0]
            .strip_suffix("  c/a  deleted")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{feed}: {text}"));
        assert!(seq > last, "{text}");
        // last_seq is where the feed stands (every write counts), at least the entry's.
        let resume: u64 = lines[1]
            .strip_prefix("last_seq ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{feed}: {text}"));
        assert!(resume >= seq, "{text}");
        let out = sh(&format!("{feed}\nchanges c {resume}"));
        assert_eq!(stdout(&out), format!("{text}last_seq {resume}\n"));
    }
}

/// Commands on stdin: JSON over several lines, `exit` stops, an unclosed bracket at the
/// end fails with one line.
fn stdin_scripts(target: &Target<'_>, tmp: &Path) {
    let run = script(
        &mut shell_command(tmp, target, &[]),
        "insertMany s [\n  {\"_id\": \"x\"},\n  {\"_id\": \"y\", \"v\": [1,\n 2]}\n]\nfindMany s\n\
         exit\ncount s\n",
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        stdout(&run),
        "Inserted 2 of 2 documents into s\n{\"_id\":\"x\"}\n{\"_id\":\"y\",\"v\":[1,2]}\nBye!\n"
    );

    let bad = script(
        &mut shell_command(tmp, target, &[]),
        "count s\ninsertOne s {\"_id\": \"z\",\n \"v\": [1, 2\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stdout(&bad), "2\n");
    let err = stderr(&bad);
    assert!(
        err.starts_with("error: line 2: invalid document JSON at line 2 column "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn scripts_over_a_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), &[]);
    let target = Target::Server(&server);
    c_scripts(&target, tmp.path());
    ttl_and_changes_scripts(&target, tmp.path());
    stdin_scripts(&target, tmp.path());
    server.stop();
}

#[test]
fn scripts_embedded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = Target::Dir(tmp.path().join("data"));
    c_scripts(&target, tmp.path());
    ttl_and_changes_scripts(&target, tmp.path());
    stdin_scripts(&target, tmp.path());
}

/// A `since` below the pruned part of the feed is one line naming the oldest usable since
/// (exit 1), over a server (its 410) and embedded; from there the feed is served.
#[test]
fn changes_past_the_retention_name_the_oldest_usable_since() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let server = Server::start(
        &data,
        &[
            ("MINIDB_CHANGES__RETENTION_SECS", "1"),
            ("MINIDB_EXPIRY__SWEEP_INTERVAL_MS", "50"),
        ],
    );
    let target = Target::Server(&server);
    let sh = |target: &Target<'_>, line: &str| {
        script(&mut shell_command(tmp.path(), target, &["-c", line]), "")
    };
    let out = sh(&target, r#"insertOne old {"_id":"a"}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&sh(&target, "changes old"));
    let early: u64 = text
        .lines()
        .next()
        .and_then(|l| l.strip_suffix("  old/a"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let out = sh(
        &target,
        "deleteOne old {\"_id\":\"a\"}\ninsertOne old {\"_id\":\"b\"}",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    let gone = loop {
        let out = sh(&target, &format!("changes old {early}"));
        if out.status.code() == Some(1) {
            break out;
        }
        assert!(Instant::now() < deadline, "the deletion was never pruned");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stdout(&gone), "");
    let err = stderr(&gone);
    let prefix = format!(
        "error: the change feed no longer holds every change after {early} (deletions past \
         their retention were pruned); the oldest usable since is "
    );
    let oldest: u64 = err
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(", or 0 to read it all again\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(oldest > early, "{err}");
    let out = sh(&target, &format!("changes old {oldest}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "only b after the floor: {text}");
    assert!(text.contains("  old/b\nlast_seq "), "{text}");
    server.stop();

    let dir = Target::Dir(data);
    let out = sh(&dir, &format!("changes old {early}"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), err, "the same line embedded");
    let out = sh(&dir, "changes old");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "only b: {text}");
    assert!(
        text.lines().next().is_some_and(|l| l.ends_with("  old/b")),
        "{text}"
    );
}

/// A data directory a server holds is refused with one clear line; a server that is not
/// there is one line too.
#[test]
fn locked_directory_and_absent_server_are_one_line_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &[]);
    let out = script(
        &mut shell_command(tmp.path(), &Target::Dir(dir.clone()), &["-c", "count c"]),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "minidb: data directory {} is in use by a running minidb server; stop it, or \
             work through it with `minidb shell --url http://HOST:PORT`\n",
            dir.display()
        )
    );
    server.stop();

    // Port 1 on loopback: nothing listens there.
    let out = script(
        command(tmp.path()).args(["shell", "--url", "http://127.0.0.1:1", "-c", "count c"]),
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("minidb: cannot reach the server at http://127.0.0.1:1: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Peak RSS (KiB) of the shell running `commands` on `dir`, its stdout to /dev/null.
fn peak_rss_kib(tmp: &Path, dir: &Path, commands: &str) -> i64 {
    let child = shell_command(tmp, &Target::Dir(dir.to_path_buf()), &["-c", commands])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{commands}: status {status}"
    );
    drop(child);
    usage.ru_maxrss
}

/// Restores a generated MiniDBGo dump of MINIDB_BENCH_DOCS (default 1M) documents, dumps it
/// again and prints it all (`dumpAll`), embedded, each in its own shell process, and prints
/// each one's peak RSS. The dump of 1M documents is about 110 MB; the shell must not hold it.
#[test]
#[ignore = "benchmark: make bench-shell (generates and restores 1M documents)"]
fn shell_memory_bench() {
    let docs: u64 = std::env::var("MINIDB_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source.json");
    let mut w = BufWriter::new(File::create(&source).expect("create"));
    w.write_all(b"{").expect("write");
    let collections = 4;
    for c in 0..collections {
        if c > 0 {
            w.write_all(b",").expect("write");
        }
        write!(w, "\"col{c}\":[").expect("write");
        for i in 0..docs / collections {
            if i > 0 {
                w.write_all(b",").expect("write");
            }
            write!(
                w,
                "{{\"_id\":\"{c}-{i:08}\",\"n\":{i},\"name\":\"document number {i}\",\"tags\":[\"a\",\"b\"]}}"
            )
            .expect("write");
        }
        w.write_all(b"]").expect("write");
    }
    w.write_all(b"}\n").expect("write");
    w.flush().expect("flush");
    drop(w);
    let size = std::fs::metadata(&source).expect("stat").len();
    let dir = tmp.path().join("data");
    let dump = tmp.path().join("again.json");

    let restore = peak_rss_kib(tmp.path(), &dir, &format!("restoreDB {}", source.display()));
    let dumped = peak_rss_kib(tmp.path(), &dir, &format!("dumpDB {}", dump.display()));
    let printed = peak_rss_kib(tmp.path(), &dir, "dumpAll");
    let mut head = [0u8; 2];
    File::open(&dump)
        .and_then(|mut f| f.read_exact(&mut head))
        .expect("read the dump");
    assert_eq!(&head, b"{\"");
    let again = std::fs::metadata(&dump).expect("stat").len();
    println!(
        "shell peak RSS, {docs} documents ({} MB dump): restoreDB {} MiB, dumpDB {} MiB \
         ({} MB written), dumpAll {} MiB",
        size / 1_000_000,
        restore / 1024,
        dumped / 1024,
        again / 1_000_000,
        printed / 1024
    );
    // Bounded: far below the size of the data (the engine's memtables and caches, not
    // the documents).
    let bound = 512 * 1024;
    for (what, kib) in [
        ("restoreDB", restore),
        ("dumpDB", dumped),
        ("dumpAll", printed),
    ] {
        assert!(kib < bound, "{what}: peak RSS {kib} KiB");
    }
}
