// A minimal wallet client in Java: proves the detector's contract is language-neutral.
//
// Plain org.apache.kafka:kafka-clients (producer + consumer), no framework, no JSON library:
// the withdrawal is built by hand (plain JSON, keyed by account_id, the default partitioner's
// murmur2 picks the partition, as the worker's own table partitioning expects), and the verdict
// is read with a small JSON reader below. Fail safe: no verdict by the deadline, or any error,
// prints a `delay` made by the client (never `allow`).
//
// Build and run (kafka-clients and slf4j-api on the class path; `detector kafka start` caches
// them in ~/.cache/detector/kafka-<version>/lib):
//
//   javac -cp 'LIB/*' -d out deploy/clients/java/WalletClient.java
//   java -cp "out:LIB/*" WalletClient --bootstrap 127.0.0.1:9092 \
//       --withdrawal-id w-1 --account-id acct-1 --asset BTC --amount 0.5 \
//       --amount-usd 30000 --destination bc1q... [--requested-at 2026-11-24T10:00:00Z] \
//       [--withdrawals withdrawals] [--decisions decisions] [--deadline-ms 5000]
//
// Prints one line on stdout: the detector's verdict document exactly as it was on `decisions`,
// or {"withdrawal_id":..,"verdict":"delay","source":"client","reason":"client_timeout"|
// "client_error","detail":..}. Exit status 0 for a detector verdict, 3 for a fail-safe delay,
// 2 for bad arguments (nothing sent). Diagnostics go to stderr.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

public final class WalletClient {
    static final int EXIT_VERDICT = 0;
    static final int EXIT_USAGE = 2;
    static final int EXIT_FAIL_SAFE = 3;

    public static void main(String[] argv) {
        long started = System.nanoTime();
        Map<String, String> args;
        String withdrawal;
        long deadlineMs;
        try {
            args = parseArgs(argv);
            withdrawal = withdrawalJson(args);
            deadlineMs = Long.parseLong(args.getOrDefault("deadline-ms", "5000"));
        } catch (IllegalArgumentException e) {
            System.err.println("WalletClient: " + e.getMessage());
            System.exit(EXIT_USAGE);
            return;
        }
        long deadline = started + TimeUnit.MILLISECONDS.toNanos(deadlineMs);
        String withdrawalId = args.get("withdrawal-id");
        KafkaConsumer<String, String> consumer = null;
        KafkaProducer<String, String> producer = null;
        Outcome outcome;
        try {
            consumer = new KafkaConsumer<>(consumerConfig(args));
            producer = new KafkaProducer<>(producerConfig(args, deadline));
            outcome = decide(consumer, producer, args, withdrawal, deadline);
        } catch (Exception e) { // fail safe: anything at all is a delay, never an allow
            outcome = failSafe(withdrawalId, "client_error", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        if (outcome == null) {
            outcome = failSafe(withdrawalId, "client_timeout", "no verdict before the deadline");
        }
        // Answer first, then close: the caller never waits for the clean-up.
        System.out.println(outcome.json());
        System.out.flush();
        System.err.printf("WalletClient: answered after %d ms (deadline %d ms)%n",
                TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started), deadlineMs);
        if (producer != null) {
            producer.close(Duration.ofMillis(500)); // a send still in flight is abandoned
        }
        if (consumer != null) {
            consumer.close(); // no group: nothing to commit, nothing to wait for
        }
        System.exit(outcome.failSafe() ? EXIT_FAIL_SAFE : EXIT_VERDICT);
    }

    /** What the client answers: a verdict document, and whether the client made it. */
    record Outcome(String json, boolean failSafe) {}

    static Properties consumerConfig(Map<String, String> args) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.getOrDefault("bootstrap", "127.0.0.1:9092"));
        c.put(ConsumerConfig.CLIENT_ID_CONFIG, "detector-java-wallet-client");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"); // no group: manual assignment
        c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return c;
    }

    static Properties producerConfig(Map<String, String> args, long deadline) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.getOrDefault("bootstrap", "127.0.0.1:9092"));
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "detector-java-wallet-client");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(Math.max(remainingMs(deadline), 1)));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return p;
    }

    /** Publish, then wait for the verdict; null when the deadline passes first. */
    static Outcome decide(KafkaConsumer<String, String> consumer, KafkaProducer<String, String> producer,
                          Map<String, String> args, String withdrawal, long deadline) throws Exception {
        String withdrawals = args.getOrDefault("withdrawals", "withdrawals");
        String decisions = args.getOrDefault("decisions", "decisions");
        String withdrawalId = args.get("withdrawal-id");
        String accountId = args.get("account-id");
        try {
            // Verdicts are keyed by account_id: read only the partition the account hashes to,
            // from its end offset taken before publishing (nothing missed, nothing old read).
            List<PartitionInfo> parts = consumer.partitionsFor(decisions, Duration.ofMillis(remainingMs(deadline)));
            if (parts == null || parts.isEmpty()) {
                throw new IllegalStateException("topic " + decisions + " does not exist");
            }
            byte[] key = accountId.getBytes(StandardCharsets.UTF_8);
            int partition = Utils.toPositive(Utils.murmur2(key)) % parts.size();
            TopicPartition tp = new TopicPartition(decisions, partition);
            consumer.assign(Collections.singletonList(tp));
            consumer.seekToEnd(Collections.singletonList(tp));
            long start = consumer.position(tp, Duration.ofMillis(remainingMs(deadline)));

            // Keyed by account_id, no explicit partition: the default partitioner (murmur2).
            RecordMetadata sent = producer.send(new ProducerRecord<>(withdrawals, accountId, withdrawal))
                    .get(Math.max(remainingMs(deadline), 1), TimeUnit.MILLISECONDS);
            System.err.printf("WalletClient: published %s to %s-%d@%d; reading %s from offset %d%n",
                    withdrawalId, sent.topic(), sent.partition(), sent.offset(), tp, start);

            while (remainingMs(deadline) > 0) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(Math.min(remainingMs(deadline), 100)))) {
                    Object doc;
                    try {
                        doc = new Json(r.value()).parse();
                    } catch (IllegalArgumentException e) {
                        continue; // not JSON: not a verdict
                    }
                    if (!(doc instanceof Map) || !withdrawalId.equals(((Map<?, ?>) doc).get("withdrawal_id"))) {
                        continue; // another withdrawal's verdict
                    }
                    Map<?, ?> v = (Map<?, ?>) doc;
                    Object kind = v.get("verdict");
                    if (!accountId.equals(v.get("account_id"))
                            || !(kind instanceof String) || !List.of("allow", "delay", "refuse").contains(kind)
                            || !(v.get("score") instanceof Double)) {
                        return failSafe(withdrawalId, "client_error", "malformed verdict: " + r.value());
                    }
                    // The first verdict wins; duplicates are identical by contract.
                    return new Outcome(r.value(), false);
                }
            }
            return null;
        } catch (java.util.concurrent.ExecutionException e) {
            throw new IllegalStateException("publishing failed: " + e.getCause(), e);
        } catch (TimeoutException | org.apache.kafka.common.errors.TimeoutException e) {
            return null; // deadline passed while connecting or publishing
        }
    }

    static long remainingMs(long deadlineNanos) {
        return Math.max(TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime()), 0);
    }

    static Outcome failSafe(String withdrawalId, String reason, String detail) {
        return new Outcome("{\"withdrawal_id\":" + quote(withdrawalId) + ",\"verdict\":\"delay\","
                + "\"source\":\"client\",\"reason\":" + quote(reason) + ",\"detail\":"
                + quote(String.valueOf(detail)) + "}", true);
    }

    // ------------------------------------------------------------------ the withdrawal JSON

    static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < argv.length; i += 2) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("arguments are --name value pairs, got " + argv[i]);
            }
            out.put(argv[i].substring(2), argv[i + 1]);
        }
        for (String required : List.of("withdrawal-id", "account-id", "asset", "amount", "destination")) {
            if (!out.containsKey(required) || out.get(required).isEmpty()) {
                throw new IllegalArgumentException("--" + required + " is required");
            }
        }
        return out;
    }

    /** The withdrawal event of the contract, plain JSON built by hand. */
    static String withdrawalJson(Map<String, String> a) {
        Map<String, String> fields = new LinkedHashMap<>();
        fields.put("withdrawal_id", quote(a.get("withdrawal-id")));
        fields.put("account_id", quote(a.get("account-id")));
        fields.put("asset", quote(a.get("asset")));
        fields.put("amount", quote(new java.math.BigDecimal(a.get("amount")).toPlainString()));
        if (a.containsKey("amount-usd")) {
            double usd = Double.parseDouble(a.get("amount-usd"));
            if (Double.isNaN(usd) || Double.isInfinite(usd) || usd < 0) {
                throw new IllegalArgumentException("--amount-usd must be a finite number >= 0");
            }
            fields.put("amount_usd", String.valueOf(usd));
        }
        fields.put("destination", quote(a.get("destination")));
        fields.put("requested_at", quote(a.getOrDefault("requested-at", Instant.now().toString())));
        StringBuilder sb = new StringBuilder("{");
        for (Map.Entry<String, String> f : fields.entrySet()) {
            if (sb.length() > 1) {
                sb.append(',');
            }
            sb.append(quote(f.getKey())).append(':').append(f.getValue());
        }
        return sb.append('}').toString();
    }

    static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (ch < 0x20) {
                        sb.append(String.format("\\u%04x", (int) ch));
                    } else {
                        sb.append(ch);
                    }
            }
        }
        return sb.append('"').toString();
    }

    // ------------------------------------------------------------------ a small JSON reader

    /** Objects -> Map, arrays -> List, numbers -> Double, strings, booleans, null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s == null ? "" : s;
        }

        Object parse() {
            Object v = value();
            ws();
            if (i != s.length()) {
                throw error("trailing characters");
            }
            return v;
        }

        private Object value() {
            ws();
            if (i >= s.length()) {
                throw error("unexpected end");
            }
            char ch = s.charAt(i);
            if (ch == '{') {
                i++;
                Map<String, Object> m = new LinkedHashMap<>();
                ws();
                if (peek('}')) {
                    return m;
                }
                do {
                    ws();
                    String k = string();
                    ws();
                    expect(':');
                    m.put(k, value());
                    ws();
                } while (peek(','));
                expect('}');
                return m;
            }
            if (ch == '[') {
                i++;
                List<Object> l = new ArrayList<>();
                ws();
                if (peek(']')) {
                    return l;
                }
                do {
                    l.add(value());
                    ws();
                } while (peek(','));
                expect(']');
                return l;
            }
            if (ch == '"') {
                return string();
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            try {
                return Double.valueOf(s.substring(start, i));
            } catch (NumberFormatException e) {
                throw error("bad value");
            }
        }

        private String string() {
            expect('"');
            StringBuilder sb = new StringBuilder();
            while (i < s.length()) {
                char ch = s.charAt(i++);
                if (ch == '"') {
                    return sb.toString();
                }
                if (ch != '\\') {
                    sb.append(ch);
                    continue;
                }
                if (i >= s.length()) {
                    break;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'b': sb.append('\b'); break;
                    case 'f': sb.append('\f'); break;
                    case 'n': sb.append('\n'); break;
                    case 'r': sb.append('\r'); break;
                    case 't': sb.append('\t'); break;
                    case 'u':
                        if (i + 4 > s.length()) {
                            throw error("bad \\u escape");
                        }
                        sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                        break;
                    default: sb.append(e); // \" \\ \/
                }
            }
            throw error("unterminated string");
        }

        private void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private boolean peek(char ch) {
            if (i < s.length() && s.charAt(i) == ch) {
                i++;
                return true;
            }
            return false;
        }

        private void expect(char ch) {
            if (!peek(ch)) {
                throw error("expected '" + ch + "'");
            }
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException(what + " at " + i);
        }
    }
}
