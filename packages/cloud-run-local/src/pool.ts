// A service's instances and the autoscaling of them, as Cloud Run documents it:
// - at most max_instance_request_concurrency requests at a time per instance; a gRPC stream is
//   one request for its whole life (https://cloud.google.com/run/docs/about-concurrency);
// - more load starts more instances, up to the maximum; a request waits for a free slot, on an
//   instance starting for it (a cold start) as long as that takes, and at the maximum for a
//   bounded time: Cloud Run tries for up to 30 s, then the request fails
//   (https://cloud.google.com/run/docs/configuring/max-instances-limits, "Handle requests when
//   all instances are busy");
// - an instance is routed to only once its startup probe passes, and one whose liveness probe
//   fails is restarted (https://cloud.google.com/run/docs/configuring/healthchecks);
// - idle instances are kept for a while (Cloud Run: "may keep some instances idle for up to 15
//   minutes", https://cloud.google.com/run/docs/about-instance-autoscaling) then shut down,
//   never below the minimum.
// Where the docs are silent, the choices here: a request goes to the busiest instance that has
// a free slot (load packs onto few instances, so the others fall idle and can be scaled in);
// one instance is started per slot's worth of waiting requests; a service starts one instance
// at start even with a minimum of 0 (a deploy checks its revision starts), which then scales in
// when idle like any other.

import type { Probe } from "./infra.js";
import type { Instance } from "./instance.js";
import type { Logger } from "./log.js";

export interface PoolOptions {
  service: string;
  maxConcurrency: number;
  minInstances: number;
  maxInstances: number;
  /** How long an instance stays idle before it is shut down. */
  idleMs: number;
  /** How long a request waits for a free slot before it is refused. */
  pendingMs: number;
  /** Between SIGTERM and SIGKILL. */
  shutdownGraceMs: number;
  startupProbe: Probe;
  livenessProbe: Probe | undefined;
  /** Starts a new instance's process (not yet ready). */
  launch(): Promise<Instance>;
  logger: Logger;
}

/** No instance could take the request in time (answered 429 at the edge). */
export class NoInstanceAvailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoInstanceAvailable";
  }
}

interface Waiter {
  resolve(instance: Instance): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class InstancePool {
  private readonly live: Instance[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly idleTimers = new Map<Instance, NodeJS.Timeout>();
  private launching = 0;
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** Every instance not stopped yet: starting, ready or stopping. */
  instances(): readonly Instance[] {
    return this.live;
  }

  /**
   * Starts the first instances (the minimum, at least one) and waits until they are ready;
   * rejects with why when one cannot start, as a deploy fails.
   */
  async start(): Promise<void> {
    const count = Math.max(1, this.options.minInstances);
    const started = await Promise.all(
      Array.from({ length: count }, () => this.startInstance("deploy")),
    );
    const failed = started.find((outcome) => typeof outcome === "string");
    if (failed) throw new Error(`${this.options.service}: ${failed}`);
  }

  /** A slot on a ready instance: now, once one frees, or once a new instance is ready. */
  acquire(signal?: AbortSignal): Promise<Instance> {
    if (this.closed) return Promise.reject(new NoInstanceAvailable("the service is stopping"));
    const instance = this.freeInstance();
    if (instance) {
      this.take(instance);
      return Promise.resolve(instance);
    }
    return new Promise((resolve, reject) => {
      // While an instance is starting, the requests it will take wait for it (a cold start);
      // the bound is for requests that no instance is coming for (at the maximum).
      const expire = () => {
        if (this.starting() > 0) {
          waiter.timer = setTimeout(expire, this.options.pendingMs);
          return;
        }
        this.dropWaiter(waiter);
        reject(
          new NoInstanceAvailable(
            `no instance had a free slot within ${this.options.pendingMs} ms (${this.live.length} of at most ${this.options.maxInstances} instances, ${this.options.maxConcurrency} requests each)`,
          ),
        );
      };
      const waiter: Waiter = { resolve, reject, timer: setTimeout(expire, this.options.pendingMs) };
      signal?.addEventListener(
        "abort",
        () => {
          if (this.dropWaiter(waiter)) reject(new Error("the request ended while it waited"));
        },
        { once: true },
      );
      this.waiters.push(waiter);
      this.scaleOut();
    });
  }

  /** The request on `instance` is over. */
  release(instance: Instance): void {
    instance.active -= 1;
    if (instance.active === 0) {
      instance.idleSince = Date.now();
      this.armIdleTimer(instance);
    }
    this.dispatch();
  }

  async stop(): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new NoInstanceAvailable("the service is stopping"));
    }
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    await Promise.all(this.live.map((instance) => this.shutDown(instance, "stop")));
  }

  private freeInstance(): Instance | undefined {
    let best: Instance | undefined;
    for (const instance of this.live) {
      if (instance.state !== "ready" || instance.active >= this.options.maxConcurrency) continue;
      if (!best || instance.active > best.active) best = instance;
    }
    return best;
  }

  private take(instance: Instance): void {
    instance.active += 1;
    const timer = this.idleTimers.get(instance);
    if (timer) clearTimeout(timer);
    this.idleTimers.delete(instance);
  }

  private dropWaiter(waiter: Waiter): boolean {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return false;
    this.waiters.splice(index, 1);
    clearTimeout(waiter.timer);
    return true;
  }

  /** Hands free slots to waiting requests, oldest first. */
  private dispatch(): void {
    while (this.waiters.length > 0) {
      const instance = this.freeInstance();
      if (!instance) break;
      const waiter = this.waiters.shift() as Waiter;
      clearTimeout(waiter.timer);
      this.take(instance);
      waiter.resolve(instance);
    }
  }

  private counted(): number {
    return this.live.filter((instance) => instance.state !== "stopping").length + this.launching;
  }

  private starting(): number {
    return this.live.filter((instance) => instance.state === "starting").length + this.launching;
  }

  /** Starts instances while the waiting requests exceed the slots of those already starting. */
  private scaleOut(): void {
    while (
      !this.closed &&
      this.waiters.length > this.starting() * this.options.maxConcurrency &&
      this.counted() < this.options.maxInstances
    ) {
      void this.startInstance(`${this.waiters.length} requests waiting`);
    }
  }

  /** Resolves undefined once ready, else why it could not start. */
  private async startInstance(reason: string): Promise<string | undefined> {
    const { logger, service } = this.options;
    this.launching += 1;
    let instance: Instance;
    try {
      instance = await this.options.launch();
    } catch (error) {
      this.launching -= 1;
      const reason = (error as Error).message;
      logger.error(
        { event: "instance failed", service, reason },
        `${service}: no instance: ${reason}`,
      );
      return reason;
    }
    this.launching -= 1;
    this.live.push(instance);
    logger.info(
      {
        event: "instance started",
        service,
        instance: instance.id,
        pid: instance.pid,
        port: instance.port,
        reason,
        instances: this.live.length,
      },
      `${service}: instance ${instance.id} started (${reason})`,
    );
    void instance.exited.then((code) => this.onExit(instance, code));
    const failure = await instance.awaitStartup(this.options.startupProbe);
    if (failure !== undefined) {
      if (instance.state !== "stopping" && instance.state !== "stopped") {
        logger.error(
          {
            event: "instance failed",
            service,
            instance: instance.id,
            reason: failure,
            lastLines: instance.lastLines.slice(-5),
          },
          `${service}: instance ${instance.id} failed to start: ${failure}`,
        );
        await instance.stop(this.options.shutdownGraceMs);
      }
      this.dispatch();
      return `instance ${instance.id} failed to start: ${failure}\n${instance.lastLines.slice(-5).join("\n")}`;
    }
    logger.info(
      {
        event: "instance ready",
        service,
        instance: instance.id,
        startupMs: Date.now() - instance.startedAt,
      },
      `${service}: instance ${instance.id} ready (startup probe passed)`,
    );
    const liveness = this.options.livenessProbe;
    if (liveness) {
      instance.watchLiveness(liveness, (outcome) => {
        logger.warn(
          { event: "instance restarted", service, instance: instance.id, reason: outcome },
          `${service}: instance ${instance.id} is restarted: ${outcome}`,
        );
        void this.shutDown(instance, "liveness");
        if (!this.closed) void this.startInstance(`restart of ${instance.id}`);
      });
    }
    if (instance.active === 0) this.armIdleTimer(instance);
    this.dispatch();
    return undefined;
  }

  private armIdleTimer(instance: Instance): void {
    const previous = this.idleTimers.get(instance);
    if (previous) clearTimeout(previous);
    this.idleTimers.set(
      instance,
      setTimeout(() => {
        this.idleTimers.delete(instance);
        if (this.closed || instance.state !== "ready" || instance.active > 0) return;
        const ready = this.live.filter((other) => other.state === "ready").length;
        if (ready <= this.options.minInstances) return;
        this.options.logger.info(
          {
            event: "instance scaled in",
            service: this.options.service,
            instance: instance.id,
            idleMs: Date.now() - instance.idleSince,
            instances: ready - 1,
          },
          `${this.options.service}: instance ${instance.id} scaled in (idle)`,
        );
        void this.shutDown(instance, "idle");
      }, this.options.idleMs),
    );
  }

  private async shutDown(instance: Instance, why: string): Promise<void> {
    const timer = this.idleTimers.get(instance);
    if (timer) clearTimeout(timer);
    this.idleTimers.delete(instance);
    const code = await instance.stop(this.options.shutdownGraceMs);
    this.options.logger.info(
      {
        event: "instance stopped",
        service: this.options.service,
        instance: instance.id,
        why,
        exit: code,
      },
      `${this.options.service}: instance ${instance.id} stopped (${code})`,
    );
  }

  private onExit(instance: Instance, code: number | string): void {
    const index = this.live.indexOf(instance);
    if (index >= 0) this.live.splice(index, 1);
    const timer = this.idleTimers.get(instance);
    if (timer) clearTimeout(timer);
    this.idleTimers.delete(instance);
    if (this.closed) return;
    // An exit nobody asked for: a crash. Keep the minimum; waiting requests start others.
    if (instance.readyAt !== undefined && !instance.stopRequested) {
      this.options.logger.warn(
        {
          event: "instance exited",
          service: this.options.service,
          instance: instance.id,
          exit: code,
          lastLines: instance.lastLines.slice(-5),
        },
        `${this.options.service}: instance ${instance.id} exited on its own (${code})`,
      );
      if (this.counted() < this.options.minInstances)
        void this.startInstance(`replacing ${instance.id}`);
    }
    this.scaleOut();
  }
}
