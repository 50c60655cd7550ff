//! [`SimFs`]: an in-memory file system that keeps the durable state apart from the live one,
//! for crash and fault tests.
//!
//! Rules (strict POSIX, as ext4 guarantees them and no more):
//! - a file's contents (and size) are durable when the file is synced (`sync_data`);
//! - a name (creation, rename, removal, hard link) is durable when its directory is synced;
//! - a power loss keeps exactly the durable state ([`CrashMode::DropUnsynced`]), or, with
//!   [`CrashMode::TearUnsynced`], additionally a random prefix of each file's unsynced appends
//!   and, per directory, either its synced or its live entries: states a real disk can be
//!   left in when the OS wrote back some of its dirty pages before the power went.
//!
//! Space is reserved at `write(2)` time (as ext4 and xfs do with delayed allocation), so a
//! full disk fails writes and extensions with `ENOSPC`, never an fsync.
//!
//! Faults: fail the N-th operation ([`SimFs::fail_op`]), fail operations by seeded
//! probability ([`SimFs::fail_randomly`]), lose power right after the N-th sync
//! ([`SimFs::crash_after_sync`]; from then on every operation fails as if the process were
//! gone, until [`SimFs::power_loss`]), or lose power now.
//!
//! Paths are resolved from one root; a relative path means the same as an absolute one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{DirEntry, EntryKind, Storage, StorageFile, StorageLock};

/// How a power loss treats what was not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Keep exactly the durable state.
    DropUnsynced,
    /// Keep the durable state plus, chosen by `seed`, a prefix of each file's unsynced
    /// appends and, per directory, either the synced or the live entries.
    TearUnsynced {
        /// Seeds the choices.
        seed: u64,
    },
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with an I/O error (`EIO`).
    Eio,
    /// The operation fails with `ENOSPC` (operations that cannot allocate fail with `EIO`).
    NoSpace,
    /// A write stores only part of its bytes and reports the shorter count (other
    /// operations are not affected).
    ShortWrite,
}

/// Counters of a [`SimFs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Operations performed (or attempted) so far; the next one has number `ops + 1`.
    pub ops: u64,
    /// Successful file and directory syncs so far.
    pub syncs: u64,
    /// Faults injected so far.
    pub faults: u64,
    /// Power losses so far.
    pub crashes: u64,
    /// Bytes held by live files.
    pub used_bytes: u64,
}

const ROOT: u64 = 1;

#[derive(Debug, Default, Clone)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
struct DirNode {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct RandomFaults {
    rng: Rng,
    probability: f64,
    kinds: Vec<FaultKind>,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Bumped by each power loss; handles of an older generation are dead.
    generation: u64,
    /// Set after the sync that `crash_after_sync` named: the process is gone.
    dead: bool,
    stats: SimStats,
    crash_after_sync: Option<u64>,
    fail_ops: BTreeMap<u64, FaultKind>,
    random: Option<RandomFaults>,
    capacity: Option<u64>,
    locks: HashSet<u64>,
    open: HashMap<u64, usize>,
    rules: Vec<Rule>,
    /// Gates not yet opened.
    closed_gates: HashSet<u64>,
    /// Gates an operation is waiting at (for tests that wait for the wait).
    waiting_at: HashMap<u64, usize>,
    next_gate: u64,
    crash_after_op: Option<u64>,
}

/// Small deterministic generator (splitmix64): the library needs no `rand`.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// The operations of a [`SimFs`], for faults and gates aimed at one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOp {
    /// `read_at`, `len`, `list`, `kind`, `open`, `available_bytes`.
    Read,
    /// `write_at`.
    Write,
    /// `set_len`.
    SetLen,
    /// A file's `sync_data`.
    Sync,
    /// `sync_dir`.
    SyncDir,
    /// `create_new`, `create_dir`, `hard_link`, `lock`.
    Create,
    /// `rename`.
    Rename,
    /// `remove_file`, `remove_dir`.
    Remove,
}

impl SimOp {
    /// Whether the operation can need space (so `NoSpace` applies to it).
    fn allocates(self) -> bool {
        matches!(self, SimOp::Write | SimOp::SetLen | SimOp::Create)
    }
}

/// A fault or gate aimed at the next operations of one kind on matching paths.
#[derive(Debug)]
struct Rule {
    op: SimOp,
    /// The operation's path must contain this (empty: any path).
    path_contains: String,
    /// Operations still to hit.
    remaining: u32,
    action: RuleAction,
}

#[derive(Debug)]
enum RuleAction {
    Fail(FaultKind),
    /// The operation waits until the gate with this id is opened.
    Gate(u64),
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error ({what})"))
}

fn enospc(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("simulated no space left on device ({what})"),
    )
}

fn dead_error() -> io::Error {
    io::Error::other("simulated power loss: the process is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// A path's components below the root (`.` dropped, `..` applied).
fn components(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl State {
    fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        State {
            nodes,
            next_ino: ROOT + 1,
            generation: 1,
            dead: false,
            stats: SimStats::default(),
            crash_after_sync: None,
            fail_ops: BTreeMap::new(),
            random: None,
            capacity: None,
            locks: HashSet::new(),
            open: HashMap::new(),
            rules: Vec::new(),
            closed_gates: HashSet::new(),
            waiting_at: HashMap::new(),
            next_gate: 1,
            crash_after_op: None,
        }
    }

    /// Counts an operation and decides whether a fault hits it. Gates are handled by
    /// [`enter`] before this.
    fn begin(&mut self, op: SimOp, path: &Path) -> io::Result<Option<FaultKind>> {
        if self.dead {
            return Err(dead_error());
        }
        self.stats.ops += 1;
        if self.crash_after_op.is_some_and(|n| self.stats.ops > n) {
            self.dead = true;
            return Err(dead_error());
        }
        let what = format!("op {} {op:?} {}", self.stats.ops, path.display());
        let mut fault = self.fail_ops.remove(&self.stats.ops);
        if fault.is_none() {
            let p = path.to_string_lossy();
            if let Some(i) = self.rules.iter().position(|r| {
                matches!(r.action, RuleAction::Fail(_))
                    && r.op == op
                    && p.contains(&r.path_contains)
            }) {
                if let RuleAction::Fail(k) = self.rules[i].action {
                    fault = Some(k);
                }
                self.rules[i].remaining -= 1;
                if self.rules[i].remaining == 0 {
                    self.rules.remove(i);
                }
            }
        }
        if fault.is_none() {
            if let Some(r) = &mut self.random {
                if !r.kinds.is_empty() && r.rng.chance(r.probability) {
                    let i = r.rng.below(r.kinds.len() as u64) as usize;
                    fault = Some(r.kinds[i]);
                }
            }
        }
        let Some(kind) = fault else {
            return Ok(None);
        };
        match kind {
            FaultKind::ShortWrite if op == SimOp::Write => {
                self.stats.faults += 1;
                Ok(Some(kind))
            }
            FaultKind::ShortWrite => Ok(None),
            FaultKind::NoSpace if op.allocates() => {
                self.stats.faults += 1;
                Err(enospc(&what))
            }
            _ => {
                self.stats.faults += 1;
                Err(eio(&what))
            }
        }
    }

    /// The gate the next `op` on `path` must wait at, if any (consumes the rule).
    fn gate_for(&mut self, op: SimOp, path: &Path) -> Option<u64> {
        let p = path.to_string_lossy();
        let i = self.rules.iter().position(|r| {
            matches!(r.action, RuleAction::Gate(_)) && r.op == op && p.contains(&r.path_contains)
        })?;
        let RuleAction::Gate(g) = self.rules[i].action else {
            return None;
        };
        self.rules[i].remaining -= 1;
        if self.rules[i].remaining == 0 {
            self.rules.remove(i);
        }
        Some(g)
    }

    fn after_sync(&mut self) {
        self.stats.syncs += 1;
        if self.crash_after_sync == Some(self.stats.syncs) {
            self.dead = true;
        }
    }

    fn dir(&self, ino: u64) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn file_mut(&mut self, ino: u64) -> Option<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Some(f),
            _ => None,
        }
    }

    /// The inode at `path`, following live entries.
    fn lookup(&self, path: &Path) -> Option<u64> {
        let mut ino = ROOT;
        for c in components(path) {
            ino = *self.dir(ino)?.live.get(&c)?;
        }
        Some(ino)
    }

    /// The parent directory's inode and the last component.
    fn parent_of(&self, path: &Path) -> io::Result<(u64, String)> {
        let mut comps = components(path);
        let name = comps
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root has no parent"))?;
        let mut ino = ROOT;
        for c in comps {
            ino = *self
                .dir(ino)
                .and_then(|d| d.live.get(&c))
                .ok_or_else(|| not_found(path))?;
        }
        if self.dir(ino).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: parent is not a directory", path.display()),
            ));
        }
        Ok((ino, name))
    }

    fn used(&self) -> u64 {
        let live: HashSet<u64> = self
            .nodes
            .values()
            .filter_map(|n| match n {
                Node::Dir(d) => Some(d.live.values().copied()),
                Node::File(_) => None,
            })
            .flatten()
            .chain(self.open.keys().copied())
            .collect();
        live.iter()
            .filter_map(|i| match self.nodes.get(i) {
                Some(Node::File(f)) => Some(f.live.len() as u64),
                _ => None,
            })
            .sum()
    }

    /// Room for `extra` more bytes.
    fn room(&self, extra: u64) -> u64 {
        match self.capacity {
            None => extra,
            Some(cap) => cap.saturating_sub(self.used()).min(extra),
        }
    }

    /// Drops inodes no name (live or durable) and no open handle refers to.
    fn gc(&mut self) {
        let mut referenced: HashSet<u64> = HashSet::new();
        referenced.insert(ROOT);
        for n in self.nodes.values() {
            if let Node::Dir(d) = n {
                referenced.extend(d.live.values().copied());
                referenced.extend(d.durable.values().copied());
            }
        }
        referenced.extend(self.open.keys().copied());
        referenced.extend(self.locks.iter().copied());
        self.nodes.retain(|ino, _| referenced.contains(ino));
    }

    /// Power loss: the live state becomes the durable one (torn as `mode` says).
    fn crash(&mut self, mode: CrashMode) {
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::TearUnsynced { seed } => Some(Rng(seed)),
        };
        let mut next: HashMap<u64, Node> = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if next.contains_key(&ino) {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let rebuilt = match node {
                Node::Dir(d) => {
                    let keep_live = rng.as_mut().is_some_and(|r| r.chance(0.5));
                    let entries = if keep_live { &d.live } else { &d.durable };
                    stack.extend(entries.values().copied());
                    Node::Dir(DirNode {
                        live: entries.clone(),
                        durable: entries.clone(),
                    })
                }
                Node::File(f) => {
                    let content = match rng.as_mut() {
                        Some(r)
                            if f.live.len() > f.durable.len() && f.live.starts_with(&f.durable) =>
                        {
                            let extra = r.below((f.live.len() - f.durable.len()) as u64 + 1);
                            f.live[..f.durable.len() + extra as usize].to_vec()
                        }
                        Some(r) => {
                            if f.live != f.durable && r.chance(0.5) {
                                f.live.clone()
                            } else {
                                f.durable.clone()
                            }
                        }
                        None => f.durable.clone(),
                    };
                    Node::File(FileNode {
                        live: content.clone(),
                        durable: content,
                    })
                }
            };
            next.insert(ino, rebuilt);
        }
        self.nodes = next;
        self.generation += 1;
        self.dead = false;
        self.crash_after_sync = None;
        self.crash_after_op = None;
        self.locks.clear();
        self.open.clear();
        self.stats.crashes += 1;
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a gate opens or an operation starts waiting at one.
    gates: Condvar,
}

/// Locks the state for one operation: waits at a gate aimed at it, then counts it and
/// decides its fault.
fn enter<'a>(
    shared: &'a Shared,
    op: SimOp,
    path: &Path,
) -> io::Result<(MutexGuard<'a, State>, Option<FaultKind>)> {
    let mut s = shared.state.lock();
    if let Some(g) = s.gate_for(op, path) {
        *s.waiting_at.entry(g).or_insert(0) += 1;
        shared.gates.notify_all();
        while s.closed_gates.contains(&g) {
            shared.gates.wait(&mut s);
        }
        if let Some(n) = s.waiting_at.get_mut(&g) {
            *n -= 1;
        }
    }
    let fault = s.begin(op, path)?;
    Ok((s, fault))
}

/// An in-memory file system with a durable state, power loss and fault injection.
/// Clones share one file system.
///
/// A simulated power loss cannot stop the threads of an engine running on it: drop the
/// engine first, or cut the power with [`SimFs::crash_after_sync`] /
/// [`SimFs::crash_after_op`], after which every operation fails until
/// [`SimFs::power_loss`].
#[derive(Debug, Clone)]
pub struct SimFs {
    shared: Arc<Shared>,
}

/// Holds operations aimed at by [`SimFs::gate_next`] until opened.
#[derive(Debug)]
pub struct Gate {
    shared: Arc<Shared>,
    id: u64,
}

impl Gate {
    /// Waits until an operation is held at the gate (at most `timeout`); true if one is.
    pub fn wait_until_held(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.shared.state.lock();
        while s.waiting_at.get(&self.id).copied().unwrap_or(0) == 0 {
            if self.shared.gates.wait_until(&mut s, deadline).timed_out() {
                return s.waiting_at.get(&self.id).copied().unwrap_or(0) > 0;
            }
        }
        true
    }

    /// Lets held and later operations through.
    pub fn open(&self) {
        let mut s = self.shared.state.lock();
        s.closed_gates.remove(&self.id);
        self.shared.gates.notify_all();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty file system (just the root directory, durable).
    pub fn new() -> Self {
        SimFs {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                gates: Condvar::new(),
            }),
        }
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        let s = self.shared.state.lock();
        SimStats {
            used_bytes: s.used(),
            ..s.stats
        }
    }

    /// Fails operation number `op` (see [`SimStats::ops`]) with `kind`.
    pub fn fail_op(&self, op: u64, kind: FaultKind) {
        self.shared.state.lock().fail_ops.insert(op, kind);
    }

    /// Fails each later operation with probability `probability`, with a kind drawn from
    /// `kinds`, deterministically for a `seed`.
    pub fn fail_randomly(&self, seed: u64, probability: f64, kinds: &[FaultKind]) {
        self.shared.state.lock().random = Some(RandomFaults {
            rng: Rng(seed),
            probability,
            kinds: kinds.to_vec(),
        });
    }

    /// Fails the next `times` operations of kind `op` whose path contains `path_contains`
    /// (empty: any path) with `kind`.
    pub fn fail_next(&self, op: SimOp, path_contains: &str, kind: FaultKind, times: u32) {
        if times == 0 {
            return;
        }
        self.shared.state.lock().rules.push(Rule {
            op,
            path_contains: path_contains.to_string(),
            remaining: times,
            action: RuleAction::Fail(kind),
        });
    }

    /// Holds the next operation of kind `op` whose path contains `path_contains` until the
    /// returned gate is opened (or dropped).
    pub fn gate_next(&self, op: SimOp, path_contains: &str) -> Gate {
        let mut s = self.shared.state.lock();
        let id = s.next_gate;
        s.next_gate += 1;
        s.closed_gates.insert(id);
        s.rules.push(Rule {
            op,
            path_contains: path_contains.to_string(),
            remaining: 1,
            action: RuleAction::Gate(id),
        });
        Gate {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Stops every injected fault (pending [`SimFs::fail_op`]s, [`SimFs::fail_next`]s and
    /// random ones).
    pub fn stop_failing(&self) {
        let mut s = self.shared.state.lock();
        s.fail_ops.clear();
        s.random = None;
        s.rules.retain(|r| matches!(r.action, RuleAction::Gate(_)));
    }

    /// The power goes after operation number `op` (see [`SimStats::ops`]): every later
    /// operation fails, until [`SimFs::power_loss`].
    pub fn crash_after_op(&self, op: u64) {
        self.shared.state.lock().crash_after_op = Some(op);
    }

    /// Right after the sync numbered `sync` (see [`SimStats::syncs`]) completes, the power
    /// goes: that sync succeeds, every later operation fails, until [`SimFs::power_loss`].
    pub fn crash_after_sync(&self, sync: u64) {
        self.shared.state.lock().crash_after_sync = Some(sync);
    }

    /// True once a [`SimFs::crash_after_sync`] point was reached.
    pub fn is_dead(&self) -> bool {
        self.shared.state.lock().dead
    }

    /// Loses power now (or completes a pending [`SimFs::crash_after_sync`]): only what was
    /// durable remains (torn per `mode`), every handle and lock of before is dead, and the
    /// file system works again, as after a reboot.
    pub fn power_loss(&self, mode: CrashMode) {
        self.shared.state.lock().crash(mode);
    }

    /// Limits the bytes all live files may hold together (`None`: no limit).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.shared.state.lock().capacity = bytes;
    }

    /// The live contents of a file, without counting an operation (tests).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.shared.state.lock();
        match s.nodes.get(&s.lookup(path)?) {
            Some(Node::File(f)) => Some(f.live.clone()),
            _ => None,
        }
    }

    /// Replaces a file's contents, live and durable, without counting an operation (tests
    /// that damage files).
    pub fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.shared.state.lock();
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        let f = s.file_mut(ino).ok_or_else(|| not_found(path))?;
        f.live = data.to_vec();
        f.durable = data.to_vec();
        Ok(())
    }

    fn handle(
        &self,
        path: &Path,
        ino: u64,
        writable: bool,
        generation: u64,
    ) -> Box<dyn StorageFile> {
        *self.shared.state.lock().open.entry(ino).or_insert(0) += 1;
        Box::new(SimFile {
            shared: self.shared.clone(),
            path: path.to_path_buf(),
            ino,
            writable,
            generation,
        })
    }
}

struct SimFile {
    shared: Arc<Shared>,
    path: std::path::PathBuf,
    ino: u64,
    writable: bool,
    generation: u64,
}

impl SimFile {
    fn check(&self, s: &State) -> io::Result<()> {
        if s.generation != self.generation {
            return Err(dead_error());
        }
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock();
        if s.generation != self.generation {
            return;
        }
        if let Some(n) = s.open.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                s.open.remove(&self.ino);
            }
        }
        s.gc();
    }
}

fn not_writable() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only")
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (s, _) = enter(&self.shared, SimOp::Read, &self.path)?;
        self.check(&s)?;
        let Some(Node::File(f)) = s.nodes.get(&self.ino) else {
            return Err(eio("read of a vanished inode"));
        };
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= f.live.len() {
            return Ok(0);
        }
        let n = buf.len().min(f.live.len() - start);
        buf[..n].copy_from_slice(&f.live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let (mut s, fault) = enter(&self.shared, SimOp::Write, &self.path)?;
        self.check(&s)?;
        if !self.writable {
            return Err(not_writable());
        }
        let start = usize::try_from(offset).map_err(|_| eio("offset out of range"))?;
        let cur_len = match s.nodes.get(&self.ino) {
            Some(Node::File(f)) => f.live.len(),
            _ => return Err(eio("write of a vanished inode")),
        };
        let mut n = buf.len();
        if fault == Some(FaultKind::ShortWrite) {
            n = (n / 2).max(usize::from(n > 0));
        }
        let end = start.saturating_add(n);
        let growth = end.saturating_sub(cur_len) as u64;
        let room = s.room(growth);
        if room < growth {
            // Write what fits, as write(2) does; a write with no room at all fails.
            let fits = (cur_len + room as usize).saturating_sub(start).min(n);
            if fits == 0 {
                return Err(enospc("write"));
            }
            n = fits;
        }
        let f = s
            .file_mut(self.ino)
            .ok_or_else(|| eio("write of a vanished inode"))?;
        if f.live.len() < start + n {
            f.live.resize(start + n, 0);
        }
        f.live[start..start + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        let (s, _) = enter(&self.shared, SimOp::Read, &self.path)?;
        self.check(&s)?;
        match s.nodes.get(&self.ino) {
            Some(Node::File(f)) => Ok(f.live.len() as u64),
            _ => Err(eio("stat of a vanished inode")),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::SetLen, &self.path)?;
        self.check(&s)?;
        if !self.writable {
            return Err(not_writable());
        }
        let len = usize::try_from(len).map_err(|_| eio("length out of range"))?;
        let cur = match s.nodes.get(&self.ino) {
            Some(Node::File(f)) => f.live.len(),
            _ => return Err(eio("set_len of a vanished inode")),
        };
        if len > cur && s.room((len - cur) as u64) < (len - cur) as u64 {
            return Err(enospc("set_len"));
        }
        let f = s
            .file_mut(self.ino)
            .ok_or_else(|| eio("set_len of a vanished inode"))?;
        f.live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Sync, &self.path)?;
        self.check(&s)?;
        let f = s
            .file_mut(self.ino)
            .ok_or_else(|| eio("fsync of a vanished inode"))?;
        f.durable = f.live.clone();
        s.after_sync();
        Ok(())
    }
}

struct SimLock {
    shared: Arc<Shared>,
    ino: u64,
    generation: u64,
}

impl StorageLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock();
        if s.generation == self.generation {
            s.locks.remove(&self.ino);
            s.gc();
        }
    }
}

impl Storage for SimFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Create, path)?;
        let (parent, name) = s.parent_of(path)?;
        if s.dir(parent).is_some_and(|d| d.live.contains_key(&name)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = s.next_ino;
        s.next_ino += 1;
        s.nodes.insert(ino, Node::Dir(DirNode::default()));
        if let Some(d) = s.dir_mut(parent) {
            d.live.insert(name, ino);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let (s, _) = enter(&self.shared, SimOp::Read, dir)?;
        let ino = s.lookup(dir).ok_or_else(|| not_found(dir))?;
        let d = s.dir(ino).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotADirectory, format!("{}", dir.display()))
        })?;
        Ok(d.live
            .iter()
            .map(|(name, ino)| DirEntry {
                name: name.clone(),
                kind: match s.nodes.get(ino) {
                    Some(Node::Dir(_)) => EntryKind::Dir,
                    _ => EntryKind::File,
                },
            })
            .collect())
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let (s, _) = enter(&self.shared, SimOp::Read, path)?;
        Ok(s.lookup(path).map(|ino| match s.nodes.get(&ino) {
            Some(Node::Dir(_)) => EntryKind::Dir,
            _ => EntryKind::File,
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let generation = {
            let (mut s, _) = enter(&self.shared, SimOp::Create, path)?;
            let (parent, name) = s.parent_of(path)?;
            if s.dir(parent).is_some_and(|d| d.live.contains_key(&name)) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            let ino = s.next_ino;
            s.next_ino += 1;
            s.nodes.insert(ino, Node::File(FileNode::default()));
            if let Some(d) = s.dir_mut(parent) {
                d.live.insert(name, ino);
            }
            (ino, s.generation)
        };
        Ok(self.handle(path, generation.0, true, generation.1))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>> {
        let (ino, generation) = {
            let (s, _) = enter(&self.shared, SimOp::Read, path)?;
            let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
            if !matches!(s.nodes.get(&ino), Some(Node::File(_))) {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            (ino, s.generation)
        };
        Ok(self.handle(path, ino, writable, generation))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Rename, from)?;
        let (fp, fname) = s.parent_of(from)?;
        let (tp, tname) = s.parent_of(to)?;
        let ino = s
            .dir(fp)
            .and_then(|d| d.live.get(&fname).copied())
            .ok_or_else(|| not_found(from))?;
        if let Some(d) = s.dir_mut(fp) {
            d.live.remove(&fname);
        }
        if let Some(d) = s.dir_mut(tp) {
            d.live.insert(tname, ino);
        }
        s.gc();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Remove, path)?;
        let (parent, name) = s.parent_of(path)?;
        let ino = s
            .dir(parent)
            .and_then(|d| d.live.get(&name).copied())
            .ok_or_else(|| not_found(path))?;
        if matches!(s.nodes.get(&ino), Some(Node::Dir(_))) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        if let Some(d) = s.dir_mut(parent) {
            d.live.remove(&name);
        }
        s.gc();
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Remove, path)?;
        let (parent, name) = s.parent_of(path)?;
        let ino = s
            .dir(parent)
            .and_then(|d| d.live.get(&name).copied())
            .ok_or_else(|| not_found(path))?;
        match s.dir(ino) {
            Some(d) if d.live.is_empty() => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    format!("{} is not empty", path.display()),
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", path.display()),
                ))
            }
        }
        if let Some(d) = s.dir_mut(parent) {
            d.live.remove(&name);
        }
        s.gc();
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::SyncDir, path)?;
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        let d = s.dir_mut(ino).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotADirectory, format!("{}", path.display()))
        })?;
        d.durable = d.live.clone();
        s.after_sync();
        s.gc();
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (mut s, _) = enter(&self.shared, SimOp::Create, from)?;
        let ino = s.lookup(from).ok_or_else(|| not_found(from))?;
        let (tp, tname) = s.parent_of(to)?;
        if s.dir(tp).is_some_and(|d| d.live.contains_key(&tname)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        if let Some(d) = s.dir_mut(tp) {
            d.live.insert(tname, ino);
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        let (mut s, _) = enter(&self.shared, SimOp::Create, path)?;
        let ino = match s.lookup(path) {
            Some(ino) => ino,
            None => {
                let (parent, name) = s.parent_of(path)?;
                let ino = s.next_ino;
                s.next_ino += 1;
                s.nodes.insert(ino, Node::File(FileNode::default()));
                if let Some(d) = s.dir_mut(parent) {
                    d.live.insert(name, ino);
                }
                ino
            }
        };
        if !s.locks.insert(ino) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "held by another opener",
            ));
        }
        Ok(Box::new(SimLock {
            shared: self.shared.clone(),
            ino,
            generation: s.generation,
        }))
    }

    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        let (s, _) = enter(&self.shared, SimOp::Read, path)?;
        Ok(s.capacity.map(|c| c.saturating_sub(s.used())))
    }
}
