// Two freestyle jobs for the local stack, made at every boot (idempotent) and built once:
// `test` passes (the job the seeded workflows' test instances name) and `failing` fails.
// Core Jenkins only: FreeStyleProject and the shell build step need no plugin.
import hudson.model.FreeStyleProject
import hudson.tasks.Shell
import jenkins.model.Jenkins

def jenkins = Jenkins.get()
[test: 'echo "all tests passed"; exit 0', failing: 'echo "a test failed"; exit 1'].each { name, script ->
    def job = jenkins.getItem(name)
    if (job == null) {
        job = jenkins.createProject(FreeStyleProject, name)
        job.buildersList.add(new Shell(script))
        job.save()
    }
    if (job.lastBuild == null) {
        job.scheduleBuild2(0)
    }
}
