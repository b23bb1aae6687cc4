//! A TCP proxy in front of PostgreSQL that loses the answer to one COMMIT: it passes the
//! COMMIT on, so the server commits, then closes the client's connection instead of passing
//! the server's answer back, as a connection dropped at that moment would. Everything else
//! passes through unchanged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A simple-protocol query message holding `COMMIT`, as tokio-postgres sends it to commit a
/// transaction: tag, length (itself and the text), text with its terminator.
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

pub struct CommitCut {
    pub port: u16,
    cuts: Arc<AtomicUsize>,
}

impl CommitCut {
    /// Listens on a free port in front of the PostgreSQL on `upstream`, armed to lose the
    /// answer to the first COMMIT any of its connections sends.
    pub async fn start(upstream: u16) -> CommitCut {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy listens");
        let port = listener.local_addr().expect("a local address").port();
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, armed.clone(), counted.clone()));
            }
        });
        CommitCut { port, cuts }
    }

    /// The URL of the database `wallet` through this proxy.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/wallet", self.port)
    }

    /// How many answers to a COMMIT were lost: 1 once the armed cut happened.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, upstream: u16, armed: Arc<AtomicBool>, cuts: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Set before the COMMIT goes to the server, so its answer, the next bytes the server
    // sends, is never passed on.
    let committing = Arc::new(AtomicBool::new(false));
    let cutting = committing.clone();
    let upward = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        // The end of what came before, so a COMMIT split between two reads is still seen.
        let mut recent: Vec<u8> = Vec::new();
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            recent.extend_from_slice(&buffer[..read]);
            if recent
                .windows(COMMIT_MESSAGE.len())
                .any(|window| window == COMMIT_MESSAGE)
                && armed.swap(false, Ordering::SeqCst)
            {
                cutting.store(true, Ordering::SeqCst);
            }
            let keep = recent.len().saturating_sub(COMMIT_MESSAGE.len() - 1);
            recent.drain(..keep);
            if server_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if committing.load(Ordering::SeqCst) {
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    upward.abort();
    let _ = client_write.shutdown().await;
}
