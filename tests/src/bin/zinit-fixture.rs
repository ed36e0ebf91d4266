//! The test fixture: builds a real process tree of a requested shape and
//! behaviour, logs every signal each process receives, and prints the pids it
//! created.
//!
//! Every process is a `fork` of the first (no `exec`), so every one of them
//! carries the same argv, including `--tag TAG`: tests find and reap their
//! processes by that tag. The program is single-threaded on purpose (it
//! forks).
//!
//! It receives signals as an ordinary program does: the signal mask and the
//! dispositions it inherited are left as they are, and stop signals are
//! caught by plain handlers that write the signal's number to a pipe the
//! main loop polls (a self-pipe). A signal that was ignored when the fixture
//! started stays ignored, as in a shell, and a blocked one stays blocked: a
//! supervisor that hands either down makes the fixture miss its stop signal,
//! and the test that stops it fails. Around each `fork` every signal is
//! blocked for a moment (so a child never writes into its parent's pipe),
//! then the inherited mask is restored, never cleared.
//!
//! Output on stdout, once every process has started:
//! `proc pid=P ppid=Q depth=D role=R` for each process, then
//! `ready count=N sigblk=HEX sigign=HEX [tcp=PORT] [udp=PORT] ...`, where
//! `sigblk` and `sigign` are the root's inherited masks (`SigBlk`/`SigIgn`
//! of `/proc/self/status`, read before anything changed them; Rust ignores
//! SIGPIPE itself before `main`, so that bit is cleared in `sigign`).
//!
//! Log lines (appended to `--log FILE`, one `write` each):
//! `start pid=P ppid=Q depth=D role=R t=NS`,
//! `signal pid=P depth=D role=R sig=SIGTERM t=NS live_children=N`,
//! `exit pid=P depth=D role=R t=NS`. `t` is CLOCK_MONOTONIC in nanoseconds.

use clap::Parser;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The signals the fixture catches (when they were not ignored at start).
const CAUGHT: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

/// The write end of this process's self-pipe, for the signal handler.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The signal handler: writes the signal number to the self-pipe.
extern "C" fn on_signal(sig: std::ffi::c_int) {
    let saved = nix::errno::Errno::last_raw();
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the descriptor stays open while the handler is installed.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::unistd::write(fd, &[sig as u8]);
    }
    nix::errno::Errno::set_raw(saved);
}

/// The SigBlk and SigIgn masks of this process, from /proc/self/status.
fn inherited_masks() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigBlk:"), mask("SigIgn:"))
}

/// A fresh self-pipe for this process (the read end is returned).
fn new_self_pipe() -> OwnedFd {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .expect("pipe");
    let old = PIPE_WRITE.swap(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write);
    if old >= 0 {
        // SAFETY: the old write end was leaked by the previous call (in the parent).
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old) });
    }
    read
}

/// Installs the handler for every caught signal that was not ignored when
/// the program started (`ignored` is the inherited SigIgn mask).
fn install_handlers(ignored: u64) {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in CAUGHT {
        if ignored & (1 << (sig as i32 - 1)) != 0 {
            // Ignored on entry: it stays ignored, as in a shell.
            continue;
        }
        // SAFETY: the handler only writes to a pipe (async-signal-safe).
        unsafe { nix::sys::signal::sigaction(sig, &action) }.expect("sigaction");
    }
}

/// Forks with every signal blocked for a moment, so that the child has its
/// own self-pipe before a handler can run in it; both sides then go back to
/// the mask the program inherited.
fn fork_with_own_pipe(pipe: &mut OwnedFd) -> ForkResult {
    let mut inherited = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut inherited),
    )
    .expect("block for fork");
    // SAFETY: this program is single-threaded; the child only makes
    // system calls and continues the same program.
    let result = unsafe { fork() }.expect("fork");
    if let ForkResult::Child = result {
        *pipe = new_self_pipe();
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&inherited), None)
        .expect("restore the inherited mask");
    result
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Builds real process trees for zinit's tests")]
struct Args {
    /// A unique tag carried in every process's argv.
    #[arg(long)]
    tag: String,
    /// Children of the root, each heading a chain of `--depth` processes.
    #[arg(long, default_value_t = 0)]
    width: usize,
    /// Length of each chain below the root.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// The signals that make a process exit (others are only logged).
    #[arg(long, default_value = "TERM,INT,QUIT")]
    exit_on: String,
    /// Which processes ignore the stop signals: all, none, root, leaves, or depths like 0,2.
    #[arg(long, default_value = "none")]
    ignore_term: String,
    /// Delay between receiving a stop signal and exiting, in milliseconds.
    #[arg(long, default_value_t = 0)]
    term_delay_ms: u64,
    /// Which processes apply `--term-delay-ms` (same syntax as --ignore-term).
    #[arg(long, default_value = "all")]
    delay_scope: String,
    /// Daemons the root starts by double fork (the middle process exits; the daemon calls setsid).
    #[arg(long, default_value_t = 0)]
    double_fork: usize,
    /// Children of the root that call setsid.
    #[arg(long, default_value_t = 0)]
    setsid: usize,
    /// Children of the root that move to their own process group.
    #[arg(long, default_value_t = 0)]
    setpgid: usize,
    /// Parents replace children that die (until they are stopping themselves).
    #[arg(long)]
    respawn: bool,
    /// The root forks short-lived children continuously.
    #[arg(long)]
    fork_storm: bool,
    /// Children of the root that exit at once and are never reaped.
    #[arg(long, default_value_t = 0)]
    zombies: usize,
    /// Which processes stop themselves with SIGSTOP once started.
    #[arg(long, default_value = "none")]
    stop_self: String,
    /// The root listens on this TCP port on 127.0.0.1 (0 = any free port).
    #[arg(long)]
    tcp: Option<u16>,
    /// The root listens on this TCP port on ::1.
    #[arg(long)]
    tcp6: Option<u16>,
    /// The root binds this UDP port on 127.0.0.1.
    #[arg(long)]
    udp: Option<u16>,
    /// The root binds this UDP port on ::1.
    #[arg(long)]
    udp6: Option<u16>,
    /// The root exits by itself this many milliseconds after it is ready.
    #[arg(long)]
    exit_after_ms: Option<u64>,
    /// The exit code for `--exit-after-ms` (and for exits on a stop signal).
    #[arg(long, default_value_t = 0)]
    exit_code: i32,
    /// The root prints this many numbered lines to stdout once ready.
    #[arg(long, default_value_t = 0)]
    output_lines: u64,
    /// The root also prints a line with bytes that are not UTF-8.
    #[arg(long)]
    binary_output: bool,
    /// The root keeps printing a numbered line to stderr every N milliseconds.
    #[arg(long)]
    chatty_ms: Option<u64>,
    /// Append log lines to this file.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// Extra arguments, ignored (room for a filter-matching marker).
    #[arg(last = true)]
    rest: Vec<String>,
}

/// Which processes an option applies to.
#[derive(Debug, Clone)]
enum Scope {
    All,
    None,
    Root,
    Leaves,
    Depths(Vec<usize>),
}

impl Scope {
    fn parse(text: &str) -> Self {
        match text {
            "all" => Self::All,
            "none" => Self::None,
            "root" => Self::Root,
            "leaves" => Self::Leaves,
            list => Self::Depths(
                list.split(',')
                    .map(|d| {
                        d.trim()
                            .parse()
                            .expect("scope: all, none, root, leaves or depths")
                    })
                    .collect(),
            ),
        }
    }

    fn applies(&self, me: &Me) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Root => me.depth == 0,
            Self::Leaves => me.leaf,
            Self::Depths(list) => list.contains(&me.depth),
        }
    }
}

/// What this process is, after the fork that made it.
#[derive(Debug, Clone)]
struct Me {
    depth: usize,
    role: &'static str,
    leaf: bool,
    /// Remaining chain below this process.
    chain_below: usize,
    children: Vec<(Pid, &'static str)>,
    reap: bool,
}

struct Fixture {
    args: Args,
    ignore: Scope,
    delay: Scope,
    stop_self: Scope,
    log: Option<std::fs::File>,
    report: Option<OwnedFd>,
    /// The read end of this process's self-pipe.
    pipe: OwnedFd,
}

fn now_ns() -> u64 {
    zinit_tests::monotonic_ns()
}

impl Fixture {
    fn log(&self, line: String) {
        if let Some(mut file) = self.log.as_ref() {
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }

    fn describe(me: &Me) -> String {
        format!("pid={} depth={} role={}", getpid(), me.depth, me.role)
    }

    /// Reports this process to the root through the report pipe, then closes it.
    fn started(&mut self, me: &Me) {
        self.log(format!(
            "start {} ppid={} t={}",
            Self::describe(me),
            getppid(),
            now_ns()
        ));
        if let Some(fd) = self.report.take() {
            let line = format!(
                "proc pid={} ppid={} depth={} role={}\n",
                getpid(),
                getppid(),
                me.depth,
                me.role
            );
            let _ = nix::unistd::write(&fd, line.as_bytes());
        }
    }

    /// Forks a child that becomes `child`; returns its pid in the parent.
    fn spawn(&mut self, me: &mut Me, child: Me) -> Pid {
        match fork_with_own_pipe(&mut self.pipe) {
            ForkResult::Parent { child: pid } => {
                me.children.push((pid, child.role));
                pid
            }
            ForkResult::Child => {
                self.become_(child);
            }
        }
    }

    /// The life of one process after its fork: build its part of the tree,
    /// report, then serve signals until it exits.
    fn become_(&mut self, mut me: Me) -> ! {
        match me.role {
            "zombie" => {
                self.started(&me);
                std::process::exit(0);
            }
            "storm" => {
                // Logged, so a test can see the storm going.
                self.started(&me);
                std::thread::sleep(Duration::from_millis(20));
                std::process::exit(0);
            }
            "setsid" | "daemon" => {
                let _ = nix::unistd::setsid();
            }
            "setpgid" => {
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            "middle" => {
                // The middle of a double fork: start the daemon and vanish.
                let daemon = Me {
                    depth: 1,
                    role: "daemon",
                    leaf: true,
                    chain_below: 0,
                    children: Vec::new(),
                    reap: true,
                };
                self.spawn(&mut me, daemon);
                std::process::exit(0);
            }
            _ => {}
        }
        if me.chain_below > 0 {
            let child = Me {
                depth: me.depth + 1,
                role: "node",
                leaf: me.chain_below == 1,
                chain_below: me.chain_below - 1,
                children: Vec::new(),
                reap: true,
            };
            self.spawn(&mut me, child);
        }
        self.started(&me);
        if self.stop_self.applies(&me) {
            let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        }
        self.serve(me)
    }

    /// Counts children that have not exited (zombies count as exited).
    fn live_children(me: &Me) -> usize {
        me.children
            .iter()
            .filter(|(pid, _)| {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                matches!(
                    nix::sys::wait::waitid(nix::sys::wait::Id::Pid(*pid), flags),
                    Ok(WaitStatus::StillAlive)
                )
            })
            .count()
    }

    fn serve(&mut self, mut me: Me) -> ! {
        let storm = self.args.fork_storm && me.depth == 0;
        let chatty_every = self.args.chatty_ms.filter(|_| me.depth == 0);
        let tick = match (storm, chatty_every) {
            (true, _) => 2,
            (false, Some(ms)) => ms.clamp(1, 500),
            _ => 500,
        };
        let (mut chat, mut next_chat) = (0u64, now_ns());
        let mut terminating = false;
        let mut exit_at: Option<u64> = self
            .args
            .exit_after_ms
            .filter(|_| me.depth == 0)
            .map(|ms| now_ns() + ms * 1_000_000);
        loop {
            // Wake at the next tick, or when a delayed exit is due.
            let mut wait_ns = tick * 1_000_000;
            if let Some(at) = exit_at {
                wait_ns = wait_ns.min(at.saturating_sub(now_ns()));
            }
            let mut fds = [nix::poll::PollFd::new(
                self.pipe.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let timeout = nix::poll::PollTimeout::try_from(wait_ns / 1_000_000 + 1)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            let _ = nix::poll::poll(&mut fds, timeout);
            let mut buf = [0u8; 64];
            let received = nix::unistd::read(&self.pipe, &mut buf).unwrap_or(0);
            let signals: Vec<i32> = buf[..received].iter().map(|&b| b as i32).collect();
            if signals.is_empty() && storm && !terminating {
                let child = Me {
                    depth: 1,
                    role: "storm",
                    leaf: true,
                    chain_below: 0,
                    children: Vec::new(),
                    reap: true,
                };
                self.spawn(&mut me, child);
                self.reap_and_respawn(&mut me, false);
            }
            for sig in signals {
                if sig == Signal::SIGCHLD as i32 {
                    self.reap_and_respawn(&mut me, terminating);
                    continue;
                }
                let signal = Signal::try_from(sig).expect("known signal");
                self.log(format!(
                    "signal {} sig={} t={} live_children={}",
                    Self::describe(&me),
                    signal.as_str(),
                    now_ns(),
                    Self::live_children(&me)
                ));
                let exits = self.args.exit_on.split(',').any(|name| {
                    signal.as_str().trim_start_matches("SIG")
                        == name.trim().trim_start_matches("SIG")
                });
                if exits && !self.ignore.applies(&me) && !terminating {
                    terminating = true;
                    let delay = if self.delay.applies(&me) {
                        self.args.term_delay_ms
                    } else {
                        0
                    };
                    let at = now_ns() + delay * 1_000_000;
                    exit_at = Some(exit_at.map_or(at, |earlier| earlier.min(at)));
                }
            }
            if exit_at.is_some_and(|at| now_ns() >= at) {
                self.log(format!("exit {} t={}", Self::describe(&me), now_ns()));
                std::process::exit(self.args.exit_code);
            }
            if let Some(every) = chatty_every
                && now_ns() >= next_chat
            {
                chat += 1;
                let _ = writeln!(std::io::stderr(), "chat {chat}");
                next_chat = now_ns() + every * 1_000_000;
            }
        }
    }

    fn reap_and_respawn(&mut self, me: &mut Me, stopping: bool) {
        if !me.reap {
            return;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                    let Some(pos) = me.children.iter().position(|(p, _)| *p == pid) else {
                        continue;
                    };
                    let (_, role) = me.children.remove(pos);
                    if self.args.respawn && !stopping && role == "node" {
                        let child = Me {
                            depth: me.depth + 1,
                            role,
                            leaf: me.chain_below <= 1,
                            chain_below: me.chain_below.saturating_sub(1),
                            children: Vec::new(),
                            reap: true,
                        };
                        self.spawn(me, child);
                    }
                }
                _ => return,
            }
        }
    }
}

fn bind_ports(args: &Args) -> (Vec<TcpListener>, Vec<UdpSocket>, String) {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut ports = String::new();
    for (kind, port, addr) in [("tcp", args.tcp, "127.0.0.1"), ("tcp6", args.tcp6, "::1")] {
        if let Some(port) = port {
            let listener = TcpListener::bind((addr, port)).expect("bind tcp");
            ports += &format!(" {kind}={}", listener.local_addr().expect("addr").port());
            tcp.push(listener);
        }
    }
    for (kind, port, addr) in [("udp", args.udp, "127.0.0.1"), ("udp6", args.udp6, "::1")] {
        if let Some(port) = port {
            let socket = UdpSocket::bind((addr, port)).expect("bind udp");
            ports += &format!(" {kind}={}", socket.local_addr().expect("addr").port());
            udp.push(socket);
        }
    }
    (tcp, udp, ports)
}

fn main() {
    let args = Args::parse();
    let (sigblk, sigign) = inherited_masks();
    // Rust sets SIGPIPE to ignored before main; that bit says nothing about
    // what the fixture inherited.
    let sigign = sigign & !(1 << (Signal::SIGPIPE as i32 - 1));
    let pipe = new_self_pipe();
    install_handlers(sigign);

    let (sockets_tcp, sockets_udp, ports) = bind_ports(&args);
    let (report_read, report_write) = nix::unistd::pipe().expect("pipe");
    let mut fixture = Fixture {
        ignore: Scope::parse(&args.ignore_term),
        delay: Scope::parse(&args.delay_scope),
        stop_self: Scope::parse(&args.stop_self),
        log: args.log.as_ref().map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open log")
        }),
        report: Some(report_write),
        pipe,
        args: args.clone(),
    };
    let mut root = Me {
        depth: 0,
        role: "root",
        leaf: args.width == 0,
        chain_below: 0,
        children: Vec::new(),
        reap: args.zombies == 0,
    };
    let chain = Me {
        depth: 1,
        role: "node",
        leaf: args.depth <= 1,
        chain_below: args.depth.saturating_sub(1),
        children: Vec::new(),
        reap: true,
    };
    let expected =
        1 + args.width * args.depth + args.double_fork + args.setsid + args.setpgid + args.zombies;
    // Children must not hold the read end of the report pipe.
    let report_raw = report_read.as_raw_fd();
    let spawn_child = |fixture: &mut Fixture, root: &mut Me, child: Me| match fork_with_own_pipe(
        &mut fixture.pipe,
    ) {
        ForkResult::Parent { child: pid } => root.children.push((pid, child.role)),
        ForkResult::Child => {
            // Children must not hold the read end of the report pipe.
            let _ = nix::unistd::close(report_raw);
            fixture.become_(child)
        }
    };
    for _ in 0..args.width {
        spawn_child(&mut fixture, &mut root, chain.clone());
    }
    let single = |role: &'static str| Me {
        depth: 1,
        role,
        leaf: true,
        chain_below: 0,
        children: Vec::new(),
        reap: true,
    };
    for _ in 0..args.double_fork {
        spawn_child(&mut fixture, &mut root, single("middle"));
    }
    for _ in 0..args.setsid {
        spawn_child(&mut fixture, &mut root, single("setsid"));
    }
    for _ in 0..args.setpgid {
        spawn_child(&mut fixture, &mut root, single("setpgid"));
    }
    for _ in 0..args.zombies {
        spawn_child(&mut fixture, &mut root, single("zombie"));
    }
    // The middles of double forks exit at once; they are not root's anymore.
    root.children.retain(|(_, role)| *role != "middle");

    // The root is the pipe's reader: it must not block writing to it.
    fixture.report = None;
    fixture.started(&root);
    let mut lines = vec![format!(
        "proc pid={} ppid={} depth=0 role=root",
        getpid(),
        getppid()
    )];
    let mut pending = String::new();
    let mut buf = [0u8; 4096];
    while lines.len() < expected {
        let n = nix::unistd::read(&report_read, &mut buf).expect("read report");
        if n == 0 {
            break;
        }
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(pos) = pending.find('\n') {
            lines.push(pending[..pos].to_string());
            pending.drain(..=pos);
        }
    }
    drop(report_read);
    let mut out = std::io::stdout().lock();
    for line in &lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "ready count={} sigblk={sigblk:016x} sigign={sigign:016x}{}",
        lines.len(),
        ports
    );
    for n in 1..=args.output_lines {
        let _ = writeln!(out, "line {n}");
    }
    if args.binary_output {
        let _ = out.write_all(b"bytes \xff\xfe not utf-8\n");
    }
    let _ = out.flush();
    drop(out);
    // Reap the middles of the double forks.
    if root.reap {
        fixture.reap_and_respawn(&mut root, true);
    }
    let _keep = (sockets_tcp, sockets_udp);
    fixture.serve(root)
}
