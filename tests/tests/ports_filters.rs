//! Finding the processes that hold a port or match a process filter.

use std::net::{TcpListener, TcpStream};
use zinit_process::filter::matching;
use zinit_process::ports::port_owners;
use zinit_process::{Detail, Port, ProcessFilter, ProcessTable, Protocol};
use zinit_tests::{Tag, spawn_fixture};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

fn port(number: u16, protocol: Protocol) -> Port {
    Port { number, protocol }
}

#[tokio::test]
async fn port_owners_are_found_for_tcp_and_udp_on_ipv4_and_ipv6() {
    let tag = Tag::new("ports");
    let tree = spawn_fixture(
        FIXTURE,
        &tag,
        &["--tcp", "0", "--tcp6", "0", "--udp", "0", "--udp6", "0"],
        None,
    )
    .await;
    let root = tree.child.pid();
    for (kind, protocol) in [
        ("tcp", Protocol::Tcp),
        ("tcp6", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("udp6", Protocol::Udp),
    ] {
        let p = port(tree.ports[kind], protocol);
        assert_eq!(port_owners(&[p]), vec![(root, p)], "{kind}");
    }
    tree.kill().await;
}

#[tokio::test]
async fn a_socket_shared_by_several_processes_lists_each_owner() {
    let tag = Tag::new("shared");
    // The children fork after the root binds, so they hold the socket too.
    let tree = spawn_fixture(FIXTURE, &tag, &["--tcp", "0", "--width", "2"], None).await;
    let p = port(tree.ports["tcp"], Protocol::Tcp);
    let owners: Vec<i32> = port_owners(&[p]).into_iter().map(|(pid, _)| pid).collect();
    let mut expected = tree.pids();
    expected.sort_unstable();
    assert_eq!(owners, expected);
    tree.kill().await;
}

#[test]
fn a_port_with_no_owner_and_a_socket_in_time_wait_give_no_owner_and_no_error() {
    // A connection closed by the client first leaves the client side in
    // TIME_WAIT, a socket that no process owns any more.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let local = client.local_addr().expect("addr").port();
    drop(client);
    drop(server);
    let needle = format!(":{local:04X} ");
    let in_time_wait = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::read_to_string("/proc/net/tcp")
            .expect("tcp table")
            .lines()
            .any(|l| l.contains(&needle) && l.split_whitespace().nth(3) == Some("06"))
    });
    assert!(in_time_wait, "the client socket reached TIME_WAIT");
    assert_eq!(port_owners(&[port(local, Protocol::Tcp)]), vec![]);

    let unused = TcpListener::bind("127.0.0.1:0").expect("bind");
    let free = unused.local_addr().expect("addr").port();
    drop(unused);
    assert_eq!(port_owners(&[port(free, Protocol::Tcp)]), vec![]);
    assert_eq!(port_owners(&[port(free, Protocol::Udp)]), vec![]);
}

#[tokio::test]
async fn filters_select_by_name_exe_and_cmdline() {
    let tag = Tag::new("filters");
    let tree = spawn_fixture(FIXTURE, &tag, &["--width", "2"], None).await;
    let ours = {
        let mut pids = tree.pids();
        pids.sort_unstable();
        pids
    };
    let table = ProcessTable::snapshot(Detail::Full).expect("table");
    let select = |text: &str| -> Vec<i32> {
        let filter: ProcessFilter = text.parse().expect("valid filter");
        matching(&[filter], &table, &[])
            .into_iter()
            .map(|(p, _)| p.pid)
            .collect()
    };
    // By tag: exactly our processes (cmdline is the default kind).
    assert_eq!(select(&format!("cmdline:--tag {} ", tag.as_str())), ours);
    assert_eq!(select(&format!("--tag {} ", tag.as_str())), ours);
    // By name and exe: ours are among them (other tests' fixtures may be too).
    for filter in ["name:zinit-fixture".to_string(), format!("exe:{FIXTURE}")] {
        let found = select(&filter);
        assert!(
            ours.iter().all(|p| found.contains(p)),
            "{filter}: {found:?}"
        );
    }
    tree.kill().await;
}

#[tokio::test]
async fn an_exe_filter_matches_a_binary_that_was_replaced() {
    let tag = Tag::new("deleted");
    let copy = tag.dir().join("fixture-copy");
    std::fs::copy(FIXTURE, &copy).expect("copy fixture");
    let copy_text = copy.to_str().expect("utf-8 path").to_string();
    let tree = spawn_fixture(&copy_text, &tag, &[], None).await;
    std::fs::remove_file(&copy).expect("delete the binary");
    let table = ProcessTable::snapshot(Detail::Full).expect("table");
    let filter: ProcessFilter = format!("exe:{copy_text}").parse().expect("valid");
    let found: Vec<i32> = matching(&[filter], &table, &[])
        .into_iter()
        .map(|(p, _)| p.pid)
        .collect();
    assert_eq!(found, vec![tree.child.pid()]);
    tree.kill().await;
}

#[tokio::test]
async fn a_filter_that_would_match_the_test_runner_never_returns_it_or_its_ancestors() {
    // Query only: these filters match this very process and its parents.
    let tag = Tag::new("broad");
    let tree = spawn_fixture(FIXTURE, &tag, &[], None).await;
    let table = ProcessTable::snapshot(Detail::Full).expect("table");
    let me = std::process::id() as i32;
    let exe = std::fs::read_link("/proc/self/exe").expect("exe");
    let filters: Vec<ProcessFilter> = vec![
        format!("exe:{}", exe.display()).parse().expect("valid"),
        "cmdline:.".parse().expect("valid"),
    ];
    let found: Vec<i32> = matching(&filters, &table, &[])
        .into_iter()
        .map(|(p, _)| p.pid)
        .collect();
    assert!(
        found.contains(&tree.child.pid()),
        "a match-everything filter finds an ordinary process"
    );
    assert!(!found.contains(&me));
    for ancestor in table.ancestors(me) {
        assert!(!found.contains(&ancestor), "ancestor {ancestor}");
    }
    assert!(!found.contains(&1));
    assert!(
        found
            .iter()
            .all(|pid| !table.get(*pid).expect("listed").kernel_thread)
    );
    tree.kill().await;
}
