/* An OFP/1.1 agent in C, written from docs/PROTOCOL.md: libzmq + msgpack-c.
 *
 * It serves <prefix>echo (answers the payload), <prefix>fail (fails with the payload as
 * the error) and <prefix>sleep (answers after `payload` seconds; CANCEL stops it). The
 * prefix is $ORCHFLOW_KIND_PREFIX, "c." by default; the conformance kit sets
 * "conformance.". One thread: sleeps are timers in the poll loop, so heartbeats and
 * CANCEL are served while tasks run.
 *
 * Build: cc -O2 -o agent agent.c $(pkg-config --cflags --libs libzmq msgpack)
 */
#include <errno.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

enum { CANCEL = 0x02, READY = 0x21, DONE = 0x23, FAILED = 0x24, TASK = 0x31,
       HEARTBEAT = 0x40, DISCONNECT = 0x41, ERROR = 0x7f };
enum { CAPACITY = 4, ID_MAX = 256 };
static const double INTERVAL = 1.0; /* seconds between heartbeats (section 5.2) */
static const int LIVENESS = 3;

typedef struct { int used; char id[ID_MAX]; double due; double seconds; } sleeper_t;

static sleeper_t sleepers[CAPACITY];
static char prefix[64] = "c.", name[64];
static void *sock;
static double last_sent, last_heard;
static volatile sig_atomic_t draining;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* One OFP message: signature, command byte, msgpack body (empty when sbuf is NULL). */
static void send_msg(int command, const msgpack_sbuffer *sbuf) {
    unsigned char cmd = (unsigned char)command;
    zmq_send(sock, "OFA1", 4, ZMQ_SNDMORE);
    zmq_send(sock, &cmd, 1, ZMQ_SNDMORE);
    zmq_send(sock, sbuf ? sbuf->data : "", sbuf ? sbuf->size : 0, 0);
    last_sent = now();
}

static int running_count(void) {
    int n = 0;
    for (int i = 0; i < CAPACITY; i++) n += sleepers[i].used;
    return n;
}

static void pack_running(msgpack_packer *pk) {
    pack_str(pk, "running");
    msgpack_pack_array(pk, running_count());
    for (int i = 0; i < CAPACITY; i++)
        if (sleepers[i].used) pack_str(pk, sleepers[i].id);
}

static void send_ready(void) {
    static const char *kinds[] = {"echo", "fail", "sleep"};
    char kind[128];
    msgpack_sbuffer sbuf; msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "name"); pack_str(&pk, name);
    pack_str(&pk, "kinds");
    msgpack_pack_array(&pk, 3);
    for (int i = 0; i < 3; i++) { snprintf(kind, sizeof kind, "%s%s", prefix, kinds[i]); pack_str(&pk, kind); }
    pack_str(&pk, "capacity"); msgpack_pack_int(&pk, draining ? 0 : CAPACITY);
    pack_running(&pk);
    send_msg(READY, &sbuf);
    msgpack_sbuffer_destroy(&sbuf);
}

static void send_heartbeat(void) {
    msgpack_sbuffer sbuf; msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pack_running(&pk);
    send_msg(HEARTBEAT, &sbuf);
    msgpack_sbuffer_destroy(&sbuf);
}

/* DONE [{id, result}] with `result` an object, or FAILED [{id, error}] when error != NULL. */
static void answer(const char *id, const msgpack_object *result, double number, const char *error) {
    msgpack_sbuffer sbuf; msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "id"); pack_str(&pk, id);
    if (error) {
        pack_str(&pk, "error"); pack_str(&pk, error);
    } else {
        pack_str(&pk, "result");
        if (result) msgpack_pack_object(&pk, *result); else msgpack_pack_double(&pk, number);
    }
    send_msg(error ? FAILED : DONE, &sbuf);
    msgpack_sbuffer_destroy(&sbuf);
}

static const msgpack_object *field(const msgpack_object *map, const char *key) {
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0)
            return &kv->val;
    }
    return NULL;
}

/* A str object copied into buf; 0 if it is not a string that fits. */
static int copy_str(const msgpack_object *o, char *buf, size_t size) {
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size) return 0;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 1;
}

static double number_of(const msgpack_object *o) {
    if (!o) return 0;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
    default: return 0;
    }
}

static void run_task(const msgpack_object *task) {
    char id[ID_MAX], kind[256], error[512];
    const msgpack_object *payload = field(task, "payload");
    if (!copy_str(field(task, "id"), id, sizeof id)) return;
    if (!copy_str(field(task, "kind"), kind, sizeof kind) || strncmp(kind, prefix, strlen(prefix)) != 0) {
        answer(id, NULL, 0, "no handler for this kind");
        return;
    }
    const char *verb = kind + strlen(prefix);
    if (strcmp(verb, "echo") == 0) {
        answer(id, payload, 0, NULL);
    } else if (strcmp(verb, "fail") == 0) {
        if (!copy_str(payload, error, sizeof error)) strcpy(error, "failed on purpose");
        answer(id, NULL, 0, error);
    } else if (strcmp(verb, "sleep") == 0) {
        for (int i = 0; i < CAPACITY; i++) {
            if (!sleepers[i].used) {
                sleepers[i].used = 1;
                strcpy(sleepers[i].id, id);
                sleepers[i].seconds = number_of(payload);
                sleepers[i].due = now() + sleepers[i].seconds;
                return;
            }
        }
        answer(id, NULL, 0, "over capacity");  /* the broker's credit never lets this happen */
    } else {
        answer(id, NULL, 0, "no handler for this kind");
    }
}

static void cancel_task(const char *id) {
    for (int i = 0; i < CAPACITY; i++) {
        if (sleepers[i].used && strcmp(sleepers[i].id, id) == 0) {
            sleepers[i].used = 0;
            answer(id, NULL, 0, "cancelled");  /* the answer returns the credit (section 5.4) */
        }
    }
}

static void on_message(int command, const char *body, size_t size) {
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    int decoded = size > 0 && msgpack_unpack_next(&msg, body, size, &off) == MSGPACK_UNPACK_SUCCESS;
    const msgpack_object *data = decoded ? &msg.data : NULL;
    if (command == TASK && data && data->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < data->via.array.size; i++) run_task(&data->via.array.ptr[i]);
    } else if (command == CANCEL && data) {
        const msgpack_object *ids = field(data, "ids");
        char id[ID_MAX];
        for (uint32_t i = 0; ids && ids->type == MSGPACK_OBJECT_ARRAY && i < ids->via.array.size; i++)
            if (copy_str(&ids->via.array.ptr[i], id, sizeof id)) cancel_task(id);
    } else if (command == DISCONNECT) {
        send_ready();  /* the broker restarted and does not know us */
    } else if (command == ERROR && data) {
        char code[64] = "?", text[512] = "";
        copy_str(field(data, "code"), code, sizeof code);
        copy_str(field(data, "message"), text, sizeof text);
        fprintf(stderr, "broker: %s: %s\n", code, text);
    }
    msgpack_unpacked_destroy(&msg);
}

static void connect_broker(void *ctx, const char *endpoint) {
    int linger = 0;
    sock = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(sock, endpoint);
    last_heard = now();
    send_ready();
}

static void on_signal(int sig) { (void)sig; draining = 1; }

int main(void) {
    char endpoint[512], fallback[400];
    const char *home = getenv("ORCHFLOW_HOME");
    if (!home) {
        snprintf(fallback, sizeof fallback, "%s/.orchflow", getenv("HOME") ? getenv("HOME") : ".");
        home = fallback;
    }
    if (getenv("ORCHFLOW_BACKEND")) snprintf(endpoint, sizeof endpoint, "%s", getenv("ORCHFLOW_BACKEND"));
    else snprintf(endpoint, sizeof endpoint, "ipc://%s/run/backend", home);
    if (getenv("ORCHFLOW_KIND_PREFIX")) snprintf(prefix, sizeof prefix, "%s", getenv("ORCHFLOW_KIND_PREFIX"));
    snprintf(name, sizeof name, "c-%d", (int)getpid());
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    void *ctx = zmq_ctx_new();
    double backoff = INTERVAL;
    int announced_drain = 0;
    connect_broker(ctx, endpoint);
    for (;;) {
        double t = now(), wake = t + INTERVAL / 4;
        for (int i = 0; i < CAPACITY; i++)
            if (sleepers[i].used && sleepers[i].due < wake) wake = sleepers[i].due;
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)((wake > t ? wake - t : 0) * 1000));
        if (rc > 0) {
            /* One whole message: exactly three frames, our signature, a one-byte command. */
            zmq_msg_t part[3];
            int parts = 0, more = 1;
            size_t more_size = sizeof more;
            while (more) {
                zmq_msg_t msg;
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, sock, 0) < 0) { zmq_msg_close(&msg); break; }
                if (parts < 3) part[parts] = msg; else zmq_msg_close(&msg);
                parts++;
                zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_size);
            }
            last_heard = now();  /* any message is a sign of life (section 5.2) */
            backoff = INTERVAL;
            if (parts == 3 && zmq_msg_size(&part[0]) == 4 && memcmp(zmq_msg_data(&part[0]), "OFA1", 4) == 0 &&
                zmq_msg_size(&part[1]) == 1)
                on_message(*(unsigned char *)zmq_msg_data(&part[1]), zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
            else
                fprintf(stderr, "ignored a malformed message of %d frames\n", parts);
            for (int i = 0; i < parts && i < 3; i++) zmq_msg_close(&part[i]);
        } else if (rc < 0 && errno != EINTR) {
            perror("zmq_poll");
            return 1;
        }
        t = now();
        for (int i = 0; i < CAPACITY; i++) {
            if (sleepers[i].used && sleepers[i].due <= t) {
                sleepers[i].used = 0;
                answer(sleepers[i].id, NULL, sleepers[i].seconds, NULL);
            }
        }
        if (draining && !announced_drain) { send_ready(); announced_drain = 1; }  /* capacity 0 */
        if (draining && running_count() == 0) {
            send_msg(DISCONNECT, NULL);
            zmq_close(sock);
            zmq_ctx_term(ctx);
            return 0;
        }
        if (t - last_sent >= INTERVAL) send_heartbeat();
        if (t - last_heard > INTERVAL * LIVENESS) {  /* the broker is gone: reconnect with backoff */
            fprintf(stderr, "broker silent for %.1fs; reconnecting in %.1fs\n", t - last_heard, backoff);
            zmq_close(sock);
            usleep((useconds_t)(backoff * 1e6));
            backoff = backoff * 2 > 5 ? 5 : backoff * 2;
            connect_broker(ctx, endpoint);
        }
    }
}
