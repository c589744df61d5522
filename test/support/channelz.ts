// Open calls of a service, read through channelz (grpc.channelz.v1, served when the service
// runs with CHANNELZ_ENABLED=true): per server, and per client channel the service made (the
// gateway's channels to route and stats). grpc-js counts a server call as started when its
// HTTP/2 stream opens and as ended when its status is sent or the stream closes (a client's
// cancel), and a channel's call as ended when the status reaches the caller: so started −
// succeeded − failed is the number of streams still open, on either side.
import * as grpc from "@grpc/grpc-js";
import { deadline, unary } from "./grpc.js";

interface CallCounts {
  calls_started: string;
  calls_succeeded: string;
  calls_failed: string;
}

interface ServersResponse {
  server: { ref: { server_id: string }; data: CallCounts }[];
  end: boolean;
}

interface ChannelsResponse {
  channel: { ref: { channel_id: string; name: string }; data: CallCounts & { target: string } }[];
  end: boolean;
}

type ChannelzClient = grpc.Client & {
  GetServers(
    request: { start_server_id: number; max_results: number },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<ServersResponse>,
  ): void;
  GetTopChannels(
    request: { start_channel_id: number; max_results: number },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<ChannelsResponse>,
  ): void;
};

const ChannelzClient = grpc.makeGenericClientConstructor(
  grpc.getChannelzServiceDefinition() as unknown as grpc.ServiceDefinition,
  "Channelz",
) as unknown as new (
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => ChannelzClient;

const open = (counts: CallCounts) =>
  Number(counts.calls_started) - Number(counts.calls_succeeded) - Number(counts.calls_failed);

/** A server's call counts so far (the channelz call asking counts as started, not ended). */
export interface ServerCallCounts {
  started: number;
  succeeded: number;
  failed: number;
}

export interface OpenCallCounts {
  /** Calls open on the service's server(s), not counting the channelz call asking. */
  server: number;
  /** Calls in flight on each client channel the service made, by channelz target. */
  channels: Record<string, number>;
}

/** Channelz of one service of a local stack (h2c), called with an ID token for it. */
export class Channelz {
  private readonly client: ChannelzClient;

  /** `url`: the service's http:// URL; `token`: an ID token it accepts (undefined: auth off). */
  constructor(
    url: string,
    private readonly token: string | undefined,
  ) {
    // Its own channel (no connection shared with the traffic under test), and no channelz
    // entry of its own in the service: this client lives in the test process.
    this.client = new ChannelzClient(new URL(url).host, grpc.credentials.createInsecure(), {
      "grpc.enable_channelz": 0,
    });
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  private servers(): Promise<ServersResponse> {
    return unary<ServersResponse>((done) =>
      this.client.GetServers(
        { start_server_id: 0, max_results: 0 },
        this.metadata(),
        deadline(5_000),
        done,
      ),
    );
  }

  /** The server's counts, summed over its servers (one per service process). */
  async serverCounts(): Promise<ServerCallCounts> {
    const { server } = await this.servers();
    const sum = (field: keyof CallCounts) =>
      server.reduce((total, { data }) => total + Number(data[field]), 0);
    return {
      started: sum("calls_started"),
      succeeded: sum("calls_succeeded"),
      failed: sum("calls_failed"),
    };
  }

  async openCalls(): Promise<OpenCallCounts> {
    const servers = await this.servers();
    const channels = await unary<ChannelsResponse>((done) =>
      this.client.GetTopChannels(
        { start_channel_id: 0, max_results: 0 },
        this.metadata(),
        deadline(5_000),
        done,
      ),
    );
    // Each read is a call the server counts as open while it runs: the GetServers call itself.
    const server = servers.server.reduce((sum, { data }) => sum + open(data), 0) - 1;
    const byTarget: Record<string, number> = {};
    for (const { data } of channels.channel) {
      byTarget[data.target] = (byTarget[data.target] ?? 0) + open(data);
    }
    return { server, channels: byTarget };
  }

  /** Calls open on the server plus calls in flight on every channel the service made. */
  async total(): Promise<number> {
    const { server, channels } = await this.openCalls();
    return server + Object.values(channels).reduce((sum, n) => sum + n, 0);
  }

  close(): void {
    this.client.close();
  }
}
