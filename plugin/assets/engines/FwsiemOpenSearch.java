// Starts codelibs' embeddable OpenSearch with the ingest role added: the runner's own main gives
// its nodes only cluster_manager and data, and fwsiem's pipelines need an ingest node. Run in
// Java's source-file mode: java -cp <runner classpath> FwsiemOpenSearch.java <runner args>
//
// With -Dfwsiem.transport_ports=P1,P2,... node N uses transport port PN and the nodes find each
// other only on those ports (never another local engine's). With -Dfwsiem.control=DIR, a file named stop-N or start-N appearing in DIR stops or starts node
// N (1-based) of the cluster, so tests and drills can take one node of a multi-node cluster away
// and bring it back; the file is removed once the node has stopped or started.
import java.io.File;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public class FwsiemOpenSearch {
    public static void main(String[] args) throws Exception {
        OpenSearchRunner runner = new OpenSearchRunner();
        String transport = System.getProperty("fwsiem.transport_ports", "");
        String[] ports = transport.isEmpty() ? new String[0] : transport.split(",");
        String[] seeds = new String[ports.length];
        String[] names = new String[ports.length];
        for (int i = 0; i < ports.length; i++) {
            seeds[i] = "127.0.0.1:" + ports[i];
            names[i] = "Node " + (i + 1);
        }
        runner.onBuild((index, settings) -> {
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            if (ports.length > 0) {
                // The runner numbers its nodes from 1 when it builds them.
                settings.put("transport.port", ports[(index - 1) % ports.length]);
                settings.putList("discovery.seed_hosts", seeds);
                settings.putList("cluster.initial_cluster_manager_nodes", names);
            }
        });
        runner.build(args);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                // the JVM is going away; nothing to clean up beyond what close managed
            }
        }));
        String control = System.getProperty("fwsiem.control");
        if (control == null) {
            Thread.currentThread().join();
            return;
        }
        File dir = new File(control);
        dir.mkdirs();
        while (true) {
            File[] requests = dir.listFiles();
            if (requests != null) {
                for (File request : requests) {
                    String name = request.getName();
                    try {
                        if (name.startsWith("stop-")) {
                            int node = Integer.parseInt(name.substring(5)) - 1;
                            runner.getNode(node).close();
                            System.out.println("fwsiem: node " + (node + 1) + " stopped");
                        } else if (name.startsWith("start-")) {
                            int node = Integer.parseInt(name.substring(6)) - 1;
                            runner.startNode(node);
                            System.out.println("fwsiem: node " + (node + 1) + " started");
                        } else {
                            continue;
                        }
                    } catch (Exception e) {
                        System.out.println("fwsiem: " + name + " failed: " + e);
                    }
                    request.delete();
                }
            }
            Thread.sleep(200);
        }
    }
}
