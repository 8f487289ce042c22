//! `ironplant opcua browse|trust|certificates`: look into an OPC UA server before mapping its
//! nodes to tags, and decide which server certificates the platform trusts. The platform's OPC
//! UA certificates live in `<data-dir>/opcua/pki` (made at the first use).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use clap::{Subcommand, ValueEnum};
use ironplant_opcua::client::{self, ClientSettings, Identity, Policy};
use ironplant_opcua::opcua;
use ironplant_opcua::pki::Pki;

/// The application URI the platform presents (the first SAN entry of its certificate).
pub use ironplant_opcua::source::APPLICATION_URI;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// No security (labs only).
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

#[derive(Debug, Subcommand)]
pub enum OpcuaCommand {
    /// Browse a server's address space: a tree of NodeIds, browse names, node classes and
    /// data types. An unknown server certificate is refused; its thumbprint is printed for
    /// `ironplant opcua trust`.
    #[command(
        after_help = "Examples:\n  ironplant opcua browse opc.tcp://plc-7:4840/ --user ironplant\n  IRONPLANT_OPCUA_PASSWORD=... ironplant opcua browse opc.tcp://plc-7:4840/ 'ns=2;s=Line1' --depth 3\n  ironplant opcua browse opc.tcp://plc-7:4840/ 'ns=2;s=Line1' --config plc7 --prefix acme/lyon/packaging/line1/labeller >> ironplant.toml"
    )]
    Browse {
        /// The server's endpoint URL.
        url: String,
        /// The node to start from (default: the Objects folder, i=85).
        node: Option<String>,
        /// How many levels to show.
        #[arg(long, default_value_t = 2)]
        depth: u32,
        #[arg(long, value_enum, default_value = "basic256-sha256")]
        policy: PolicyArg,
        /// Sign only, without encryption (the default signs and encrypts).
        #[arg(long)]
        sign_only: bool,
        /// User name on the server; its password comes from IRONPLANT_OPCUA_PASSWORD.
        /// Without it: anonymous.
        #[arg(long, conflicts_with = "user_cert")]
        user: Option<String>,
        /// An X.509 user certificate (DER or PEM) as the identity, with --user-key.
        #[arg(long, value_name = "FILE", requires = "user_key")]
        user_cert: Option<PathBuf>,
        /// The private key (PEM) of --user-cert.
        #[arg(long, value_name = "FILE", requires = "user_cert")]
        user_key: Option<PathBuf>,
        /// Instead of the tree, print the `[[opcua.node]]` config mapping every variable
        /// under NODE (down to --depth levels) to tags, for the connection with this id
        /// (NodeIds with their namespace URI, type from DataType, unit from
        /// EngineeringUnits, range from EURange, writable from the access level).
        #[arg(long, value_name = "CONNECTION_ID", requires = "prefix")]
        config: Option<String>,
        /// The asset path the generated tags go under (with --config).
        #[arg(long, value_name = "ASSET_PATH")]
        prefix: Option<String>,
    },
    /// Trust a server certificate that was refused (give its thumbprint, or its first 16+ hex
    /// digits, as `browse` or `certificates` print them); with --server, a client application
    /// certificate refused by the platform's own OPC UA server.
    #[command(
        after_help = "Examples:\n  ironplant opcua trust 5246F240C1D2E3F4\n  ironplant opcua trust --server 9A0C11D27B3E8F01"
    )]
    Trust {
        thumbprint: String,
        /// A client of the platform's OPC UA server ([opcua.server]), not a server it connects to.
        #[arg(long)]
        server: bool,
    },
    /// List the certificates refused so far and the trusted ones: of the servers the platform
    /// connects to, or with --server of the clients of its own OPC UA server.
    #[command(
        after_help = "Examples:\n  ironplant opcua certificates\n  ironplant opcua certificates --server"
    )]
    Certificates {
        #[arg(long)]
        server: bool,
    },
}

pub fn run(command: OpcuaCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let server_side = matches!(
        command,
        OpcuaCommand::Trust { server: true, .. } | OpcuaCommand::Certificates { server: true }
    );
    let dir = if server_side {
        ironplant_opcua::pki::server_dir(data_dir)
    } else {
        ironplant_opcua::pki::client_dir(data_dir)
    };
    let pki =
        Pki::open_or_create(&dir, SystemTime::now()).context("open the OPC UA certificates")?;
    match command {
        OpcuaCommand::Trust { thumbprint, server } => {
            let full = pki.trust(&thumbprint)?;
            let what = if server { "client" } else { "server" };
            // Into the audit log, like every security change from the CLI (when the platform's
            // security exists in this data directory).
            if data_dir.join("security").is_dir() {
                let sec = ironplant_server::secure::open(data_dir)?;
                sec.audit
                    .record(ironplant_security::AuditEvent::ConfigChanged {
                        actor: Some(format!(
                            "cli:{}",
                            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                        )),
                        what: format!("OPC UA: trusted {what} certificate {full}"),
                    })
                    .context("cannot write the change to the audit log")?;
            }
            println!("Trusted the {what} certificate {full}.");
        }
        OpcuaCommand::Certificates { .. } => {
            for (what, list) in [("rejected", pki.rejected()?), ("trusted", pki.trusted()?)] {
                println!("{what}:");
                if list.is_empty() {
                    println!("  (none)");
                }
                for (thumb, path) in list {
                    println!("  {thumb}  {}", path.display());
                }
            }
        }
        OpcuaCommand::Browse {
            url,
            node,
            depth,
            policy,
            sign_only,
            user,
            user_cert,
            user_key,
            config,
            prefix,
        } => {
            let identity = match user {
                None => match (user_cert, user_key) {
                    (Some(certificate), Some(key)) => Identity::Certificate { certificate, key },
                    _ => Identity::Anonymous,
                },
                Some(name) => Identity::User {
                    name,
                    password: std::env::var("IRONPLANT_OPCUA_PASSWORD").context(
                        "--user needs the password in IRONPLANT_OPCUA_PASSWORD (not on the \
                         command line, where `ps` shows it)",
                    )?,
                },
            };
            let policy = match policy {
                PolicyArg::None => Policy::None,
                PolicyArg::Basic256Sha256 => Policy::Basic256Sha256,
                PolicyArg::Aes128Sha256RsaOaep => Policy::Aes128Sha256RsaOaep,
                PolicyArg::Aes256Sha256RsaPss => Policy::Aes256Sha256RsaPss,
            };
            let start = match node {
                None => opcua::types::NodeId::from(opcua::types::ObjectId::ObjectsFolder),
                Some(text) => text.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{text:?} is not a NodeId (e.g. i=85, ns=2;s=Line1, ns=3;i=1001)"
                    )
                })?,
            };
            pki.application_certificate(
                APPLICATION_URI,
                &["localhost".to_owned()],
                SystemTime::now(),
            )?;
            let settings = ClientSettings {
                url: url.clone(),
                policy,
                encrypt: !sign_only,
                identity,
                application_uri: APPLICATION_URI.into(),
                request_timeout: Duration::from_secs(10),
                retries: 0,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?;
            let generate = match (config, prefix) {
                (Some(id), Some(prefix)) => Some((
                    id,
                    ironplant_core::TagPath::parse(prefix.trim_end_matches('/')).map_err(|e| {
                        anyhow::anyhow!(
                            "--prefix {prefix:?} is not an asset path ({e}); e.g. \
                             acme/lyon/packaging/line1/labeller"
                        )
                    })?,
                )),
                _ => None,
            };
            rt.block_on(browse(&pki, &settings, start, depth, generate))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn browse(
    pki: &Pki,
    settings: &ClientSettings,
    start: opcua::types::NodeId,
    depth: u32,
    generate: Option<(String, ironplant_core::TagPath)>,
) -> anyhow::Result<()> {
    let conn = match client::connect(pki, settings).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(thumb) =
                client::untrusted_thumbprint(pki, &settings.url, settings.request_timeout, &e).await
            {
                bail!(
                    "{}: the server's certificate is not trusted (thumbprint {thumb}). Check \
                     the thumbprint with the server's administrator, then run `ironplant opcua \
                     trust {}` and browse again",
                    settings.url,
                    &thumb[..16.min(thumb.len())]
                );
            }
            return Err(e.into());
        }
    };
    if let Some((id, prefix)) = generate {
        let vars = ironplant_opcua::browse::variables(&conn, &start, depth, 10_000).await?;
        let namespaces = ironplant_opcua::browse::namespaces(&conn).await?;
        println!(
            "# {} variables under {start} on {} (generated by `ironplant opcua browse --config`)\n",
            vars.len(),
            settings.url
        );
        print!(
            "{}",
            ironplant_opcua::browse::config(&vars, &id, &prefix, &namespaces)
        );
        conn.close().await;
        return Ok(());
    }
    // Depth-first: each node printed under its parent, in browse order.
    let mut stack = vec![(start.clone(), 0u32, start.to_string())];
    while let Some((node, level, line)) = stack.pop() {
        println!("{line}");
        if level >= depth {
            continue;
        }
        let children = conn.browse(&node).await?;
        let ids: Vec<_> = children.iter().map(|c| c.node_id.clone()).collect();
        let types = conn.data_types(&ids).await?;
        for (c, t) in children.iter().zip(types).rev() {
            let ty = t
                .map(|t| format!("  {}", data_type_name(&t)))
                .unwrap_or_default();
            let line = format!(
                "{}{}  {}  {:?}{ty}",
                "  ".repeat(level as usize + 1),
                c.node_id,
                c.browse_name,
                c.node_class
            );
            stack.push((c.node_id.clone(), level + 1, line));
        }
    }
    conn.close().await;
    Ok(())
}

/// The built-in data types by name; others as their NodeId.
fn data_type_name(id: &opcua::types::NodeId) -> String {
    const NAMES: [&str; 13] = [
        "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
        "Float", "Double", "String", "DateTime",
    ];
    match (&id.identifier, id.namespace) {
        (opcua::types::Identifier::Numeric(n), 0) if (1..=13).contains(n) => {
            NAMES[*n as usize - 1].to_owned()
        }
        _ => id.to_string(),
    }
}
