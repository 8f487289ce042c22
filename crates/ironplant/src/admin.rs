//! `ironplant device|user|token|audit`: security administration on `--data-dir`, done on the
//! files directly (the security library serialises writers with lock files, so these work
//! while the platform runs; a revocation applies at the device's next TLS handshake).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Subcommand;
use ironplant_security::mqtt::{read_acl_file, update_acl_file};
use ironplant_security::{Role, Security};

/// Who the audit log names as the actor of CLI changes.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Enrol a device: issue its client certificate from the built-in CA and write
    /// `<NAME>.crt`, `<NAME>.key` (0600) and `ca.crt` into a private directory (0700; by
    /// default `<data-dir>/security/bundles/<NAME>/`). The key exists only there.
    #[command(
        after_help = "Example:\n  ironplant device enroll press-4 --out ./press-4\n  mosquitto_pub -h plant.local -p 8883 --cafile press-4/ca.crt \\\n      --cert press-4/press-4.crt --key press-4/press-4.key -t devices/press-4/hello -m hi"
    )]
    Enroll {
        /// Device name (becomes the certificate's Common Name and the MQTT identity).
        name: String,
        /// Role of the device (`device` gets only what the ACL grants devices).
        #[arg(long, default_value = "device", value_name = "ROLE")]
        role: Role,
        /// Directory to write the certificate, key and CA into (created 0700; default:
        /// <data-dir>/security/bundles/<NAME>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Revoke a device's certificate: refused from its next connection on, without restart.
    #[command(after_help = "Example:\n  ironplant device revoke press-4")]
    Revoke {
        /// Device name.
        name: String,
    },
    /// List enrolled devices, active and revoked.
    #[command(after_help = "Example:\n  ironplant device list")]
    List,
    /// Wrap a payload in a signed envelope with a device's signing key (`<NAME>.sign.key` of
    /// its bundle) and print it, for a payload published on TOPIC (for scripts, tests and
    /// gateways without an Ed25519 library; the format is in docs/integrity.md).
    #[command(
        after_help = "Example:\n  P='{\"ts\":1796601600000,\"apower\":12.3}'\n  mosquitto_pub -h plant.local -p 8883 --cafile plug-7/ca.crt \\\n      --cert plug-7/plug-7.crt --key plug-7/plug-7.key -t plugs/plug-7/status \\\n      -m \"$(ironplant device sign --key plug-7/plug-7.sign.key \\\n             --topic plugs/plug-7/status \"$P\")\""
    )]
    Sign {
        /// The device's signing key (`<NAME>.sign.key`, PKCS#8).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The topic the envelope is published on (`http:<mapping>` for HTTP ingest).
        #[arg(long)]
        topic: String,
        /// The signer's name (default: the key file's `<NAME>`).
        #[arg(long)]
        signer: Option<String>,
        /// The payload (the exact bytes are signed); `-` reads it from standard input.
        payload: String,
    },
}

/// `ironplant device sign`: needs no data directory, only the key.
fn sign(key: &Path, topic: &str, signer: Option<String>, payload: &str) -> anyhow::Result<()> {
    let name = match signer {
        Some(n) => n,
        None => ironplant_mqtt::signed::signer_of(key)
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "cannot tell the signer from {}: name it <device>.sign.key or pass --signer",
                    key.display()
                )
            })?,
    };
    let pkcs8 = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let signer = ironplant_mqtt::signed::Signer::from_pkcs8(&name, &pkcs8)
        .with_context(|| format!("{} is not a signing key", key.display()))?;
    let bytes = if payload == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("cannot read the payload from standard input")?;
        b
    } else {
        payload.as_bytes().to_vec()
    };
    let sealed = signer.seal(topic, &bytes);
    println!("{}", String::from_utf8_lossy(&sealed));
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user with a generated password, printed once.
    #[command(after_help = "Example:\n  ironplant user add alice --role operator")]
    Add {
        name: String,
        /// The user's role (devices are enrolled with `ironplant device enroll` instead).
        #[arg(long, value_name = "ROLE", value_parser = human_role())]
        role: Role,
    },
    /// Set a new generated password for a user, printed once.
    #[command(after_help = "Example:\n  ironplant user passwd alice")]
    Passwd { name: String },
    /// List users.
    #[command(after_help = "Example:\n  ironplant user list")]
    List,
    /// Lift a user's login lockout (from every address), also in the running platform from
    /// its next login attempt on; audited. For an administrator kept locked out by someone
    /// guessing its password.
    #[command(after_help = "Example:\n  ironplant user unlock admin")]
    Unlock { name: String },
    /// Limit a user to tag-path prefixes (REST API, all its tokens included), or show its
    /// limits. --read and --write each replace that direction's list (whole path levels:
    /// `site/area1` covers `site/area1/...`, not `site/area10`); a direction never set is
    /// unlimited. --clear removes both. Written to <data-dir>/security/api-scopes.json,
    /// applied from the next request on.
    #[command(
        after_help = "Examples:\n  ironplant user scope alice --read acme/lyon --write acme/lyon/line2\n  ironplant user scope alice\n  ironplant user scope alice --clear"
    )]
    Scope {
        name: String,
        /// Tag-path prefixes the user may read (one or more).
        #[arg(long, value_name = "PREFIX", num_args = 1.., conflicts_with = "clear")]
        read: Option<Vec<String>>,
        /// Tag-path prefixes the user may write (one or more).
        #[arg(long, value_name = "PREFIX", num_args = 1.., conflicts_with = "clear")]
        write: Option<Vec<String>>,
        /// Remove the user's limits (its role alone applies).
        #[arg(long)]
        clear: bool,
    },
}

/// The roles a person (user or token) may have; `device` is for enrolled devices only.
fn human_role() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["viewer", "operator", "engineer", "admin"])
        .map(|s| s.parse::<Role>().expect("the possible values are roles"))
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token (the password of HTTP `Authorization: Bearer` and of MQTT
    /// clients). Only the token goes to stdout, once; details go to stderr.
    #[command(
        after_help = "Example:\n  TOKEN=$(ironplant token create --user alice --role viewer --expires 30d)\n  curl --cacert ironplant-data/security/ca/ca.crt -H \"Authorization: Bearer $TOKEN\" https://127.0.0.1:8080/api/v1/tags"
    )]
    Create {
        /// The user the token acts as.
        #[arg(long, value_name = "NAME")]
        user: String,
        /// The token's role (default: the user's; never higher).
        #[arg(long, value_name = "ROLE", value_parser = human_role())]
        role: Option<Role>,
        /// Lifetime (e.g. 1h, 30d; at most 2 years = 730d; longer is refused).
        #[arg(long, default_value = "30d", value_name = "DURATION")]
        expires: humantime::Duration,
        /// A label for lists and the audit log.
        #[arg(long, default_value = "cli", value_name = "TEXT")]
        label: String,
    },
    /// Revoke a token by its id (the `ipt_<id>_` part, shown by `token list`).
    #[command(after_help = "Example:\n  ironplant token revoke 3f2a9c0d")]
    Revoke { id: String },
    /// List tokens (never their secrets).
    #[command(after_help = "Example:\n  ironplant token list")]
    List,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain and signatures; exit 1 naming the first bad record.
    /// With --witness, also check that the log still holds each witnessed head (it was not
    /// rolled back, truncated or replaced since).
    #[command(
        after_help = "Examples:\n  ironplant audit verify --data-dir /var/lib/ironplant\n  ironplant audit verify --witness /mnt/logs/ironplant-witness.jsonl\n  mosquitto_sub ... -t '$SYS/ironplant/audit/head' -C 1 | ironplant audit verify --witness -"
    )]
    Verify {
        /// A file of head statements, one JSON line each (`audit head`, the platform's
        /// witness file, or its `$SYS/ironplant/audit/head` messages); `-` reads stdin.
        /// May be given more than once.
        #[arg(long, value_name = "FILE|-")]
        witness: Vec<PathBuf>,
    },
    /// Print the signed head of the audit log as one line of JSON (seq, hash, ts, sig): keep
    /// it outside this host; `audit verify --witness` later proves the log was not rolled
    /// back or wiped since.
    #[command(
        after_help = "Example:\n  ironplant audit head --data-dir /var/lib/ironplant >> /mnt/logs/ironplant-witness.jsonl"
    )]
    Head,
}

fn open(data_dir: &Path) -> anyhow::Result<Arc<Security>> {
    if !data_dir.exists() {
        anyhow::bail!(
            "data directory {} does not exist; point --data-dir at the platform's data directory",
            data_dir.display()
        );
    }
    ironplant_server::secure::open(data_dir)
}

fn date(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn device(cmd: DeviceCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if let DeviceCommand::Sign {
        key,
        topic,
        signer,
        payload,
    } = &cmd
    {
        sign(key, topic, signer.clone(), payload)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sec = open(data_dir)?;
    match cmd {
        // Answered above, without the data directory.
        DeviceCommand::Sign { .. } => {}
        DeviceCommand::Enroll { name, role, out } => {
            let bundle = sec
                .ca
                .enroll(&name, role, Some(&actor()))
                .with_context(|| format!("cannot enrol device {name:?}"))?;
            let dir = match out {
                Some(dir) => dir,
                None => {
                    // Never the current directory: a private key left in whatever directory
                    // the command ran from (a home, a repository) leaks easily.
                    let bundles = sec.dir().join("bundles");
                    private_dir(&bundles)?;
                    bundles.join(&name)
                }
            };
            private_dir(&dir)?;
            let files = bundle
                .write_to(&dir)
                .with_context(|| format!("cannot write the bundle into {}", dir.display()))?;
            println!(
                "Enrolled device `{name}` (role {role}); certificate SHA-256 {}",
                bundle.fingerprint
            );
            for f in files {
                println!("  wrote {}", f.display());
            }
            println!("CA fingerprint (SHA-256): {}", sec.ca.fingerprint());
            println!(
                "The private key exists only in {} (0700): move it to the device and delete the copy.",
                dir.display()
            );
        }
        DeviceCommand::Revoke { name } => {
            let r = sec.ca.revoke(&name, Some(&actor())).with_context(|| {
                format!("cannot revoke device {name:?}; see `ironplant device list`")
            })?;
            println!(
                "Revoked device `{}` (serial {}); it is refused from its next connection on",
                r.name, r.serial
            );
        }
        DeviceCommand::List => {
            let devices = sec.ca.list().context("cannot read the device registry")?;
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.role.to_string(),
                        match d.revoked {
                            Some(t) => format!("revoked {}", date(t)),
                            None => "active".into(),
                        },
                        date(d.enrolled),
                        date(d.not_after),
                        d.serial.clone(),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "ROLE", "STATUS", "ENROLLED", "EXPIRES", "SERIAL"],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` 0700 if missing, or makes an existing one 0700, whatever the umask.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

/// A random password that passes the store's policy: 24 characters of a 57-symbol alphabet
/// (about 140 bits), by rejection sampling so every symbol is equally likely.
fn new_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let limit = 256 - 256 % ALPHABET.len();
    let mut random = std::fs::File::open("/dev/urandom")
        .context("cannot open /dev/urandom for a random password")?;
    let mut out = String::with_capacity(24);
    let mut buf = [0u8; 64];
    while out.len() < 24 {
        std::io::Read::read_exact(&mut random, &mut buf)
            .context("cannot read random bytes from /dev/urandom")?;
        for &b in &buf {
            if usize::from(b) < limit && out.len() < 24 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

pub fn user(cmd: UserCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let sec = open(data_dir)?;
    match cmd {
        UserCommand::Add { name, role } => {
            let password = new_password()?;
            sec.users
                .create_user(&name, &password, role, Some(&actor()))
                .with_context(|| format!("cannot add user {name:?}"))?;
            eprintln!("Added user `{name}` (role {role}). Its password, shown only now:");
            println!("{password}");
        }
        UserCommand::Passwd { name } => {
            let password = new_password()?;
            sec.users
                .set_password(&name, &password, Some(&actor()))
                .with_context(|| {
                    format!("cannot set the password of {name:?}; see `ironplant user list`")
                })?;
            eprintln!("New password of `{name}`, shown only now:");
            println!("{password}");
        }
        UserCommand::List => {
            let users = sec.users.list_users().context("cannot read the users")?;
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.role.to_string(),
                        if u.disabled { "disabled" } else { "active" }.into(),
                        date(u.created),
                    ]
                })
                .collect();
            print_table(&["NAME", "ROLE", "STATUS", "CREATED"], &rows);
        }
        UserCommand::Unlock { name } => {
            sec.users
                .unlock(&name, Some(&actor()))
                .with_context(|| format!("cannot unlock {name:?}; see `ironplant user list`"))?;
            println!("Lifted the lockout of `{name}` (all addresses); the running platform applies it at the next login attempt");
        }
        UserCommand::Scope {
            name,
            read,
            write,
            clear,
        } => scope(&sec, &name, read, write, clear)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(list: Option<&Vec<String>>) -> String {
    match list {
        None => "unlimited".into(),
        Some(l) if l.is_empty() => "nothing".into(),
        Some(l) => l.join(" "),
    }
}

/// `user scope`: the user's entry of `api-scopes.json`, through the policy's own writer
/// (`ironplant_security::TagScopes::set_user_rule`: replaced atomically, 0600).
fn scope(
    sec: &Security,
    name: &str,
    read: Option<Vec<String>>,
    write: Option<Vec<String>>,
    clear: bool,
) -> anyhow::Result<()> {
    use ironplant_security::{PrefixRule, TagScopes};
    let users = sec.users.list_users().context("cannot read the users")?;
    if !users.iter().any(|u| u.name == name) {
        anyhow::bail!("no user named {name:?}; see `ironplant user list`");
    }
    for p in read.iter().chain(&write).flatten() {
        ironplant_core::TagPath::parse(p.trim_end_matches('/')).map_err(|e| {
            anyhow::anyhow!(
                "prefix {p:?} is not a tag path ({e}); give whole levels like acme/lyon/line2"
            )
        })?;
    }
    let path = TagScopes::path(sec);
    let scopes = TagScopes::load(&path).map_err(|e| {
        anyhow::anyhow!("{e}; fix or remove the file (it must be JSON like {{\"users\": {{\"alice\": {{\"read\": [\"acme/lyon\"]}}}}}})")
    })?;
    if !clear && read.is_none() && write.is_none() {
        let rule = scopes.users.get(name).cloned().unwrap_or_default();
        println!(
            "{name}: read {}; write {}",
            describe(rule.read.as_ref()),
            describe(rule.write.as_ref())
        );
        return Ok(());
    }
    let mut rule = if clear {
        PrefixRule::default()
    } else {
        scopes.users.get(name).cloned().unwrap_or_default()
    };
    let trim = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect()
    };
    if let Some(r) = read {
        rule.read = Some(trim(r));
    }
    if let Some(w) = write {
        rule.write = Some(trim(w));
    }
    let change = format!(
        "tag scope: read {}; write {}",
        describe(rule.read.as_ref()),
        describe(rule.write.as_ref())
    );
    TagScopes::set_user_rule(&path, name, &rule).map_err(|e| anyhow::anyhow!(e))?;
    sec.audit
        .record(ironplant_security::AuditEvent::UserChanged {
            user: name.to_owned(),
            change: change.clone(),
            actor: Some(actor()),
        })
        .context("cannot write the change to the audit log")?;
    println!("{name}: {change} (in {})", path.display());
    Ok(())
}

pub fn token(cmd: TokenCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let sec = open(data_dir)?;
    match cmd {
        TokenCommand::Create {
            user,
            role,
            expires,
            label,
        } => {
            let t = sec
                .users
                .create_token(&user, role, expires.into(), &label, Some(&actor()))
                .with_context(|| format!("cannot create a token for {user:?}"))?;
            let until = humantime::format_rfc3339_seconds(t.expires);
            let left = t
                .expires
                .duration_since(SystemTime::now())
                .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_default();
            eprintln!(
                "Token {} for `{user}` (role {}), valid until {until} ({left}); shown only now:",
                t.id, t.role
            );
            println!("{}", t.token);
        }
        TokenCommand::Revoke { id } => {
            sec.users
                .revoke_token(&id, Some(&actor()))
                .with_context(|| {
                    format!("cannot revoke token {id:?}; see `ironplant token list`")
                })?;
            println!("Revoked token {id}; it is refused from now on");
        }
        TokenCommand::List => {
            let tokens = sec
                .users
                .list_tokens(None)
                .context("cannot read the tokens")?;
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.user.clone(),
                        t.role.to_string(),
                        match t.revoked {
                            Some(r) => format!("revoked {}", date(r)),
                            None => "active".into(),
                        },
                        date(t.expires),
                        t.label.clone(),
                    ]
                })
                .collect();
            print_table(&["ID", "USER", "ROLE", "STATUS", "EXPIRES", "LABEL"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_witnesses(files: &[PathBuf]) -> anyhow::Result<Vec<ironplant_security::HeadStatement>> {
    let mut out = Vec::new();
    for f in files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the witness from stdin")?;
            ("stdin".to_owned(), text)
        } else {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the witness file {}", f.display()))?;
            (f.display().to_string(), text)
        };
        let statements = ironplant_security::audit::parse_witness(&text)
            .map_err(|e| anyhow::anyhow!("witness {name}, {e}"))?;
        if statements.is_empty() {
            anyhow::bail!(
                "witness {name} holds no head statement; give the file the platform appends to ({}), or the output of `ironplant audit head`",
                ironplant_server::audit_witness::WITNESS_ENV
            );
        }
        out.extend(statements);
    }
    Ok(out)
}

pub fn audit(cmd: AuditCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let security = data_dir.join("security");
    let dir = security.join("audit");
    if !security.is_dir() {
        anyhow::bail!(
            "no security state (and so no audit log) in {}; point --data-dir at the platform's data directory",
            data_dir.display()
        );
    }
    match cmd {
        AuditCommand::Verify { witness } => {
            let witnessed = read_witnesses(&witness)?;
            let checked = if witnessed.is_empty() {
                ironplant_security::audit::verify(&dir)
            } else {
                ironplant_security::audit::verify_witnessed(&dir, &witnessed)
            };
            match checked {
                Ok(r) => {
                    println!(
                        "{}: ok — {} record(s), {} checkpoint(s){}{}",
                        dir.join("audit.log").display(),
                        r.records,
                        r.checkpoints,
                        r.last_checkpoint
                            .map(|c| format!(", last checkpoint at record {c}"))
                            .unwrap_or_default(),
                        if witnessed.is_empty() {
                            String::new()
                        } else {
                            format!("; holds all {} witnessed head(s)", witnessed.len())
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", dir.join("audit.log").display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Head => {
            let log = ironplant_security::AuditLog::open(
                &dir,
                Arc::new(ironplant_security::SystemClock),
                ironplant_security::AuditOptions::default(),
            )
            .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
            let head = log
                .head_statement()
                .context("cannot sign the head of the audit log")?;
            println!("{}", head.to_line());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// The MQTT rules in force: the configuration's `[security] acl` (or the built-in rules),
    /// then the rules added with `acl add`, numbered for `acl remove`. Deny wins, whatever the
    /// order.
    #[command(
        after_help = "Examples:\n  ironplant acl list\n  ironplant acl list --config ironplant.toml"
    )]
    List {
        /// The configuration file the platform runs with (its `[security] acl` replaces the
        /// built-in rules).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Add a rule (`<all|role:R|user:U|device:D> allow|deny publish|subscribe|both <filter>`,
    /// `%u` = user or device name, `%c` = client id). Applies to the running platform within a
    /// second, also to live connections (subscriptions no longer allowed are withdrawn).
    #[command(
        after_help = "Examples:\n  ironplant acl add 'device:press-4 allow publish spBv1.0/Stamping/+/%u/#'\n  ironplant acl add 'role:viewer deny subscribe acme/lyon/recipes/#'"
    )]
    Add {
        /// The rule, quoted as one argument.
        rule: String,
    },
    /// Remove a rule added with `acl add`, by its number in `acl list`.
    #[command(after_help = "Example:\n  ironplant acl remove 2")]
    Remove {
        /// The rule's number in `acl list` (configured rules have none: change them in the
        /// configuration file).
        number: usize,
    },
}

fn acl_file(sec: &Security) -> PathBuf {
    sec.dir().join(ironplant_security::mqtt::ACL_FILE)
}

pub fn acl(cmd: AclCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let sec = open(data_dir)?;
    let path = acl_file(&sec);
    match cmd {
        AclCommand::List { config } => {
            let (base, source) = match config {
                Some(file) => {
                    let Some(cfg) = crate::load_config(&file)? else {
                        return Ok(ExitCode::FAILURE);
                    };
                    match cfg
                        .get::<ironplant_security::settings::SecuritySettings>()
                        .acl
                        .clone()
                    {
                        Some(rules) => (rules, format!("{} [security] acl", file.display())),
                        None => (builtin_rules(), "built-in".to_owned()),
                    }
                }
                None => (
                    builtin_rules(),
                    "built-in (pass --config to see a configuration's own)".to_owned(),
                ),
            };
            let added = read_acl_file(&path)?;
            println!("{:>3}  {:<8} RULE", "#", "FROM");
            for r in &base {
                println!("{:>3}  {:<8} {r}", "-", "config");
            }
            for (i, r) in added.iter().enumerate() {
                println!("{:>3}  {:<8} {r}", i + 1, "acl add");
            }
            eprintln!("config rules: {source}; added rules: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Add { rule } => {
            let rule = rule.trim().to_owned();
            let parsed = ironplant_security::Acl::parse(&rule)
                .map_err(|e| anyhow::anyhow!("{e}\nwrite `<all|role:R|user:U|device:D> allow|deny publish|subscribe|both <topic filter>`, e.g. 'role:viewer deny subscribe acme/lyon/recipes/#'"))?;
            if parsed.rules().len() != 1 {
                anyhow::bail!("give exactly one rule (got {})", parsed.rules().len());
            }
            let added = update_acl_file(&path, |rules| {
                let new = !rules.contains(&rule);
                if new {
                    rules.push(rule.clone());
                }
                Ok((new, new))
            })?;
            if !added {
                println!("already there: {rule}");
                return Ok(ExitCode::SUCCESS);
            }
            sec.audit
                .record(ironplant_security::AuditEvent::ConfigChanged {
                    actor: Some(actor()),
                    what: format!("acl add: {rule}"),
                })
                .context("cannot write the change to the audit log")?;
            println!("added: {rule} (the running platform applies it within a second)");
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Remove { number } => {
            let rule = update_acl_file(&path, |rules| {
                let Some(index) = number.checked_sub(1).filter(|i| *i < rules.len()) else {
                    return Err(ironplant_security::Error::Acl(format!(
                        "there is no added rule {number} (there are {}); see `ironplant acl list`",
                        rules.len()
                    )));
                };
                Ok((true, rules.remove(index)))
            })?;
            sec.audit
                .record(ironplant_security::AuditEvent::ConfigChanged {
                    actor: Some(actor()),
                    what: format!("acl remove: {rule}"),
                })
                .context("cannot write the change to the audit log")?;
            println!("removed: {rule}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn builtin_rules() -> Vec<String> {
    ironplant_security::acl::DEFAULT_RULES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
