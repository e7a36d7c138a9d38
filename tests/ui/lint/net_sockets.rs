//! Network I/O with `std::net` and `tokio::net`.
use duractor::prelude::*;
use std::net::TcpStream;

// A stand-in with tokio's path (tokio's `net` feature is off in these tests).
mod tokio {
    pub mod net {
        pub struct UdpSocket;
        impl UdpSocket {
            pub async fn bind(_addr: &str) -> std::io::Result<UdpSocket> {
                Ok(UdpSocket)
            }
        }
    }
}

#[orchestrator]
async fn ping(_ctx: OrchestrationContext, host: String) -> Result<bool, duractor::Error> {
    let up = TcpStream::connect((host.as_str(), 80)).is_ok();
    let _socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await;
    Ok(up)
}

fn main() {}
