// Starts codelibs' embeddable OpenSearch with the ingest role added: the runner's own main gives
// its nodes only cluster_manager and data, and fwsiem's pipelines need an ingest node. Run in
// Java's source-file mode: java -cp <runner classpath> FwsiemOpenSearch.java <runner args>
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class FwsiemOpenSearch {
    public static void main(String[] args) throws Exception {
        OpenSearchRunner runner = new OpenSearchRunner();
        runner.onBuild((index, settings) -> settings.putList("node.roles", "cluster_manager", "data", "ingest"));
        runner.build(args);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                // the JVM is going away; nothing to clean up beyond what close managed
            }
        }));
        Thread.currentThread().join();
    }
}
