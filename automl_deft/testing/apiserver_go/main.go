// Command apiextensions-server runs k8s.io/apiextensions-apiserver, the part of
// kube-apiserver that serves CustomResourceDefinitions and custom resources, for
// automl-deft's real-API-server test tier (automl_deft/testing/apiserver.py).
//
// The library's own command turns root discovery off (/apis answers 404, so
// kubectl cannot list the API groups) and publishes no OpenAPI v2 document
// (kubectl's client-side schema lookups fail). This command builds the same
// server from the same options with both switched on, and answers requests that
// arrive before the CRDs are loaded with 503 (retry) instead of 404, as
// kube-apiserver does: a client polling across a server restart must not read
// "your object is gone".
package main

import (
	"os"

	"github.com/spf13/cobra"

	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	genericfilters "k8s.io/apiserver/pkg/endpoints/filters"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/notfoundhandler"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/component-base/cli"
)

func main() {
	opts := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	cmd := &cobra.Command{
		Use:   "apiextensions-server",
		Short: "Serve CustomResourceDefinitions and custom resources, with discovery and OpenAPI v2",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return opts.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if err := opts.Complete(); err != nil {
				return err
			}
			if err := opts.Validate(); err != nil {
				return err
			}
			config, err := opts.Config()
			if err != nil {
				return err
			}
			definitions := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
			config.GenericConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(
				definitions, openapinamer.NewDefinitionNamer(apiserver.Scheme))
			completed := config.Complete()
			// Complete() switches discovery off; kubectl needs /api and /apis.
			completed.GenericConfig.EnableDiscovery = true
			notFound := notfoundhandler.New(
				config.GenericConfig.Serializer, genericfilters.NoMuxAndDiscoveryIncompleteKey)
			server, err := completed.New(genericapiserver.NewEmptyDelegateWithCustomHandler(notFound))
			if err != nil {
				return err
			}
			return server.GenericAPIServer.PrepareRun().RunWithContext(c.Context())
		},
	}
	cmd.SetContext(genericapiserver.SetupSignalContext())
	opts.AddFlags(cmd.Flags())
	os.Exit(cli.Run(cmd))
}
