package tfxreference.flink;

import java.util.Collections;
import java.util.List;
import org.apache.beam.sdk.util.construction.resources.PipelineResourcesDetector;

/**
 * Tells Beam's Flink job server to stage no jars with a job.
 *
 * <p>By default the job server ships every jar on its own classpath (the
 * Flink runner and its dependencies, ~160 MB) to the cluster with each job:
 * about 12 s per job here, and 160 MB per job and process in Flink's blob
 * stores. The local cluster's TaskManagers already have those jars on their
 * classpath (cluster/flink.py), so a job needs none. Selected per job by the
 * pipeline option --pipeline_resources_detector_factory_class (Beam's
 * PipelineResourcesOptions); built by `python -m cluster fetch`.
 */
public class NoStagingDetectorFactory implements PipelineResourcesDetector.Factory {
  public static NoStagingDetectorFactory create() {
    return new NoStagingDetectorFactory();
  }

  @Override
  public PipelineResourcesDetector getPipelineResourcesDetector() {
    return new Nothing();
  }

  static class Nothing implements PipelineResourcesDetector {
    @Override
    public List<String> detect(ClassLoader classLoader) {
      return Collections.emptyList();
    }
  }
}
