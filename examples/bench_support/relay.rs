//! The floor: a TCP byte relay (`bench relay --to ADDR`) that copies each client
//! connection to a connection of its own to the upstream and does nothing else — no HTTP,
//! no keys, no log. It makes the same socket calls per request as any proxy (a read and a
//! write on each side), so the share of direct throughput it reaches on this machine is
//! the most any proxy process could reach; the daemon is measured against it.
//!
//! One event loop per core, as in the daemon; an acceptor deals connections to them in
//! turn, so they are spread evenly.

use std::net::SocketAddr;
use tokio::sync::mpsc;

/// Serves until the process is killed; prints `listening on ADDR` on stdout once bound.
pub fn run(listen: &str, to: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    println!("listening on {}", listener.local_addr()?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut loops = Vec::with_capacity(cores);
    for _ in 0..cores {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        std::thread::spawn(move || relay_loop(rx, to));
        loops.push(tx);
    }
    for (n, conn) in listener.incoming().enumerate() {
        let Ok(conn) = conn else { continue };
        conn.set_nonblocking(true)?;
        loops[n % loops.len()].send(conn)?;
    }
    Ok(())
}

fn relay_loop(mut conns: mpsc::UnboundedReceiver<std::net::TcpStream>, to: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        while let Some(conn) = conns.recv().await {
            tokio::spawn(async move {
                let Ok(mut client) = tokio::net::TcpStream::from_std(conn) else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
}
