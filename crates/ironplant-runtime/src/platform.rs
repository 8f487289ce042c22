//! The composition root: [`Platform::builder`] assembles the platform from its configuration
//! and the components registered on it, starts them in order, supervises them and stops them
//! in order.
//!
//! Start order (each step exists before the next one produces anything):
//! 1. the namespace, the tag bus, the event bus and the historian (opened, its WAL replayed);
//! 2. the processor pipeline, installed on the bus;
//! 3. sinks, each subscribed to the bus (historian ingest, UNS, registered sinks);
//! 4. services (processor ticks, registered services such as listeners);
//! 5. sources (Modbus devices, the Sparkplug host, JSON ingest over MQTT, registered sources).
//!
//! Shutdown is the reverse: sources stop, services stop, sinks drain what is queued and stop,
//! then the historian closes (flushing its memtable into chunks).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::config::Config;
use ironplant_core::Processor;
use ironplant_mqtt::settings::MqttSettings;
use ironplant_mqtt::Broker;
use ironplant_sparkplug::settings::SparkplugSettings;

use crate::component::{ComponentStats, RestartPolicy, Service, Sink, Source};
use crate::pipeline::{Pipeline, ProcessorFactory, Ticker};
use crate::{sparkplug, uns, HistorianSink, Runtime, StartError};

/// Collects what the platform is made of; [`PlatformBuilder::start`] starts it.
pub struct PlatformBuilder {
    config: Config,
    data_dir: Option<PathBuf>,
    broker: Option<Broker>,
    sources: Vec<Arc<dyn Source>>,
    sinks: Vec<Arc<dyn Sink>>,
    services: Vec<Arc<dyn Service>>,
    processors: Vec<ProcessorFactory>,
    policy: RestartPolicy,
}

/// A running platform: the runtime (namespace, buses, historian, writers) and its supervised
/// components.
pub struct Platform {
    pub runtime: Arc<Runtime>,
    processors: Vec<Arc<ComponentStats>>,
    /// The Sparkplug host application's STATE topic, when the broker runs and `[sparkplug]`
    /// enables it (the host is one of the supervised sources).
    pub sparkplug_state: Option<String>,
    /// The bus subscribers that existed when the sources started (in subscription order).
    pub subscribers_at_start: Vec<String>,
}

impl Platform {
    /// A builder for the platform `config` describes, storing its data under `data_dir` (no
    /// historian without one).
    pub fn builder(config: Config, data_dir: Option<&Path>) -> PlatformBuilder {
        PlatformBuilder {
            config,
            data_dir: data_dir.map(Path::to_path_buf),
            broker: None,
            sources: Vec::new(),
            sinks: Vec::new(),
            services: Vec::new(),
            processors: Vec::new(),
            policy: RestartPolicy::default(),
        }
    }

    /// Every component with its role, state and restarts (sinks, processors, services,
    /// sources).
    pub fn components(&self) -> Vec<Arc<ComponentStats>> {
        self.runtime.components()
    }

    /// The processors of the pipeline, in order.
    pub fn processors(&self) -> &[Arc<ComponentStats>] {
        &self.processors
    }

    /// Stops everything in order (see the module docs); each stage gets `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.runtime.supervisor.shutdown(grace).await;
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.shutdown()).await;
    }
}

impl PlatformBuilder {
    /// The embedded broker the UNS, the Sparkplug host and MQTT ingest use.
    pub fn broker(mut self, broker: Broker) -> PlatformBuilder {
        self.broker = Some(broker);
        self
    }

    /// Registers a source (started after every sink).
    pub fn source(mut self, source: impl Source) -> PlatformBuilder {
        self.sources.push(Arc::new(source));
        self
    }

    /// Registers a sink (subscribed before any source starts).
    pub fn sink(mut self, sink: impl Sink) -> PlatformBuilder {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Registers a service (a listener, a bridge...).
    pub fn service(mut self, service: impl Service) -> PlatformBuilder {
        self.services.push(Arc::new(service));
        self
    }

    /// Appends a processor to the pipeline; `factory` builds it (again after a panic).
    pub fn processor<P, F>(mut self, factory: F) -> PlatformBuilder
    where
        P: Processor + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        self.processors
            .push(Box::new(move || Box::new(factory()) as Box<dyn Processor>));
        self
    }

    /// How failed components are restarted (tests shorten the back-off).
    pub fn restart_policy(mut self, policy: RestartPolicy) -> PlatformBuilder {
        self.policy = policy;
        self
    }

    /// Starts the platform on the current tokio runtime, in the order of the module docs.
    pub fn start(self) -> Result<Platform, StartError> {
        // Checked before anything starts.
        let opcua = opcua_sources(&self.config, self.data_dir.as_deref())?;
        let runtime = Arc::new(Runtime::build_with(
            &self.config,
            self.data_dir.as_deref(),
            self.policy,
        )?);
        let supervisor = &runtime.supervisor;
        let mut processors = Vec::new();
        // Local logic first, in this order: computed tags (their samples join the batch),
        // rules (they see them), alarms (on tags and computed tags alike); then the
        // registered processors. Each factory builds from the config again after a panic.
        let mut factories: Vec<ProcessorFactory> = Vec::new();
        // Integrity first: computed tags, rules and alarms see the qualities it lowered, and
        // its findings alarm in the batch that raised them.
        if runtime.integrity.is_active() {
            let i = runtime.integrity.clone();
            factories.push(Box::new(move || {
                Box::new(crate::integrity::IntegrityProcessor::new(i.clone())) as Box<dyn Processor>
            }));
            if self.data_dir.is_some() {
                supervisor.start_service(Arc::new(crate::saved::StatePersister(
                    runtime.integrity.clone(),
                )));
            }
        }
        {
            let ns = runtime.namespace.read();
            if crate::control::computed(&self.config, &ns)?.is_some() {
                let (config, live) = (self.config.clone(), runtime.namespace.clone());
                factories.push(Box::new(move || {
                    match crate::control::computed(&config, &live.read()) {
                        Ok(Some(c)) => Box::new(c) as Box<dyn Processor>,
                        // Built once at start, so the same config builds again; if not, say so.
                        other => {
                            tracing::error!(error = ?other.err(), "computed tags cannot be rebuilt; they stop updating");
                            Box::new(crate::pipeline::Inert("computed"))
                        }
                    }
                }));
            }
            if crate::control::rules(&self.config, &ns)?.is_some() {
                let (writer, writes) = crate::control::RuleWriter::new(runtime.commands.clone());
                supervisor.start_service(Arc::new(writer));
                let (config, live, broker) = (
                    self.config.clone(),
                    runtime.namespace.clone(),
                    self.broker.clone(),
                );
                factories.push(Box::new(move || {
                    match crate::control::rules(&config, &live.read()) {
                        Ok(Some(r)) => Box::new(crate::control::RuleProcessor::new(
                            r,
                            live.clone(),
                            broker.clone(),
                            writes.clone(),
                        )) as Box<dyn Processor>,
                        other => {
                            tracing::error!(error = ?other.err(), "rules cannot be rebuilt; they stop running");
                            Box::new(crate::pipeline::Inert("rules"))
                        }
                    }
                }));
            }
        }
        // The command path's watch before the alarms: its findings are alarm inputs.
        let has_commands = !self
            .config
            .get::<ironplant_control::command::CommandSettings>()
            .tags
            .is_empty();
        crate::commands::install(&runtime, &mut factories, has_commands);
        if let Some(alarms) = &runtime.alarms {
            let a = alarms.clone();
            factories.push(Box::new(move || {
                Box::new(crate::alarms::AlarmProcessor::new(a.clone())) as Box<dyn Processor>
            }));
            supervisor.start_service(Arc::new(crate::saved::StatePersister(alarms.clone())));
        }
        factories.extend(self.processors);
        if !factories.is_empty() {
            let pipeline = Arc::new(Pipeline::new(runtime.events.clone(), self.policy));
            for f in factories {
                let stats = pipeline.add(f);
                supervisor.adopt(stats.clone());
                processors.push(stats);
            }
            runtime.bus.set_stage(pipeline.clone());
            supervisor.start_service(Arc::new(Ticker {
                pipeline,
                bus: runtime.bus.clone(),
            }));
        }
        let mut host = None;
        if let Some(broker) = &self.broker {
            let settings = self.config.get::<SparkplugSettings>();
            if settings.enabled {
                // Built (settings checked, `spBv1.0/#` subscribed) before anything runs; started
                // with the other sources.
                host = Some(Arc::new(sparkplug::SparkplugSource::new(
                    broker.clone(),
                    settings,
                    runtime.metrics.clone(),
                )?));
            }
            supervisor.start_service(Arc::new(crate::commands::MqttCommands::new(
                runtime.commands.clone(),
                broker.clone(),
                &self.config.get::<MqttSettings>().uns_prefix,
            )));
            supervisor.start_sink(Arc::new(uns::UnsSink::new(
                broker.clone(),
                &self.config.get::<MqttSettings>().uns_prefix,
            )));
            // Ends when the event bus goes with the runtime.
            drop(crate::events::attach_mqtt(
                broker.clone(),
                &runtime.events,
                &self.config.get::<MqttSettings>().uns_prefix,
            ));
        }
        if let Some(h) = &runtime.historian {
            supervisor.start_sink(Arc::new(HistorianSink::new(h.clone(), &runtime.namespace)?));
        }
        for sink in self.sinks {
            supervisor.start_sink(sink);
        }
        for service in self.services {
            supervisor.start_service(service);
        }
        let subscribers_at_start: Vec<String> = runtime
            .bus
            .stats()
            .subscribers
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        tracing::debug!(
            ?subscribers_at_start,
            "sources start after these bus subscribers"
        );
        let sparkplug_state = host.as_ref().map(|h| h.state_topic().to_owned());
        if let Some(host) = host {
            supervisor.start_source(host);
        }
        for source in runtime.device_sources(&self.config) {
            supervisor.start_source(source);
        }
        for source in opcua {
            supervisor.start_source(source);
        }
        if let Some(broker) = &self.broker {
            if !runtime.ingest.is_empty() {
                supervisor.start_source(Arc::new(ironplant_ingest::mqtt::MqttIngest::new(
                    broker.clone(),
                    runtime.ingest.clone(),
                )));
            }
        }
        for source in self.sources {
            supervisor.start_source(source);
        }
        Ok(Platform {
            runtime,
            processors,
            sparkplug_state,
            subscribers_at_start,
        })
    }
}

/// One OPC UA connector per `[[opcua.connection]]`, with the platform's OPC UA certificates in
/// `<data-dir>/opcua/pki`.
fn opcua_sources(
    config: &Config,
    data_dir: Option<&Path>,
) -> Result<Vec<Arc<dyn Source>>, StartError> {
    let settings = config.get::<ironplant_opcua::settings::OpcuaSettings>();
    if settings.connections.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dir) = data_dir else {
        return Err(StartError::Opcua(
            "OPC UA connections need a data directory for the platform's certificates (start \
             with --data-dir)"
                .to_owned(),
        ));
    };
    let pki = ironplant_opcua::pki::client_dir(dir);
    Ok(settings
        .connections
        .iter()
        .map(|c| {
            if c.policy == ironplant_opcua::client::Policy::None {
                tracing::warn!(
                    connection = %c.id,
                    "OPC UA connection {} uses no security (policy None): anyone on the network \
                     can read and change its traffic; labs only",
                    c.id
                );
            }
            let nodes = settings.nodes_of(&c.id).cloned().collect();
            Arc::new(ironplant_opcua::source::OpcuaSource::new(
                c.clone(),
                nodes,
                pki.clone(),
            )) as Arc<dyn Source>
        })
        .collect())
}
